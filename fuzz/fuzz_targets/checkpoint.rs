//! Checkpoint files: an error that says what is wrong, or a checkpoint; never a panic. Inputs
//! whose first byte is odd get a valid header and CRC-32 in front, so the payload decoder itself
//! (not only the checksum) meets every input.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let Some((&first, rest)) = bytes.split_first() else { return };
    if first % 2 == 1 {
        let mut file = b"FMLPCKPT".to_vec();
        file.extend_from_slice(&4u32.to_le_bytes());
        file.extend_from_slice(&infer::crc32::crc32(rest).to_le_bytes());
        file.extend_from_slice(rest);
        let _ = recipe::checkpoint::Checkpoint::from_bytes(&file);
    } else {
        let _ = recipe::checkpoint::Checkpoint::from_bytes(rest);
    }
});
