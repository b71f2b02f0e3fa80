//! Payloads behind a valid header and a matching CRC-32, so the decoder itself (not only the
//! checksum) meets every input.
#![no_main]

libfuzzer_sys::fuzz_target!(|payload: &[u8]| {
    let mut file = Vec::with_capacity(payload.len() + 9);
    file.extend_from_slice(&infer::MAGIC);
    file.push(infer::FORMAT_VERSION as u8);
    file.extend_from_slice(&infer::crc32::crc32(payload).to_le_bytes());
    file.extend_from_slice(payload);
    if let Ok(model) = infer::Model::from_bytes(&file) {
        let image = [200u8; infer::INPUT_SIZE];
        let _ = model.forward_into(&image, &mut infer::Scratch::<1024>::new());
    }
});
