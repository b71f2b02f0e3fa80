//! The serial protocol's decoder (the board's and the host's): any bytes, with timeouts wherever
//! a byte says so, then one good frame, which must come back whole; never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let mut decoder = wire::Decoder::<784>::new();
    for &byte in bytes {
        if byte == 0xEE {
            decoder.timeout();
        } else if let Some(Ok(frame)) = decoder.push(byte) {
            assert!(frame.payload.len() <= 784);
        }
    }
    decoder.timeout();
    let payload = [0x5Au8; 784];
    let mut frame = [0u8; wire::HEADER + 784 + wire::TRAILER];
    wire::encode(wire::CLASSIFY, &payload, &mut frame);
    let answers: Vec<_> = frame
        .iter()
        .filter_map(|&b| decoder.push(b).map(|r| r.map(|f| f.payload.to_vec())))
        .collect();
    assert_eq!(answers, vec![Ok(payload.to_vec())]);
});
