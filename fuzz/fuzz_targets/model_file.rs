//! Whole model files: an error, or a model whose forward pass runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    if let Ok(model) = infer::Model::from_bytes(bytes) {
        let image = [128u8; infer::INPUT_SIZE];
        let _ = model.forward_into(&image, &mut infer::Scratch::<1024>::new());
    }
});
