//! CRC-32 (IEEE 802.3, the zlib/gzip one), table-driven, `const`-built: 1 KB of flash.

const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// The CRC-32 of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    !update(START, bytes)
}

/// The running state before any byte; a finished CRC-32 is the state's complement.
pub const START: u32 = !0;

/// The running state after `bytes`, from `state`: for a checksum that follows its bytes as they
/// arrive (`wire`'s decoder).
pub fn update(mut state: u32, bytes: &[u8]) -> u32 {
    for &byte in bytes {
        state = TABLE[((state ^ u32::from(byte)) & 0xFF) as usize] ^ (state >> 8);
    }
    state
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_the_standard_check_value() {
        assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(super::crc32(b""), 0);
    }

    #[test]
    fn a_running_checksum_in_pieces_is_the_whole_one() {
        let bytes = b"123456789 and some more";
        let state = super::update(super::update(super::START, &bytes[..5]), &bytes[5..]);
        assert_eq!(!state, super::crc32(bytes));
    }
}
