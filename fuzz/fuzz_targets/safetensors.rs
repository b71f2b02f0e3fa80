//! safetensors files through `cargo xtask import`'s reader: an error that says what is wrong, or
//! a model file that decodes; never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    if let Ok((model, _notes)) = convert::state_dict::from_safetensors(bytes) {
        assert!(infer::Model::from_bytes(&model).is_ok());
    }
});
