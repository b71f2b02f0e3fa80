//! `.pt` state dicts (a zip archive and a pickle) through `cargo xtask import`'s reader: an error
//! that says what is wrong, or a model file that decodes; never a panic, never a call the pickle
//! asks for.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let metadata = std::collections::BTreeMap::new();
    if let Ok((model, _notes)) = convert::state_dict::from_pt(bytes, &metadata) {
        assert!(infer::Model::from_bytes(&model).is_ok());
    }
});
