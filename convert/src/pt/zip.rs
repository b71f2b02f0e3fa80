//! The zip archive of a `.pt` file: stored (uncompressed) records, each checked against its CRC
//! when read.

use infer::crc32::crc32;

use super::ALIGNMENT;

pub(super) const LOCAL: u32 = 0x0403_4b50;
pub(super) const CENTRAL: u32 = 0x0201_4b50;
pub(super) const END: u32 = 0x0605_4b50;
/// 1980-01-01 as a DOS date: (year − 1980) << 9 | month << 5 | day.
pub(super) const DOS_1980_01_01: u16 = 1 << 5 | 1;

pub(super) fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

pub(super) fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

/// A zip archive of `records` (name, data), stored, each record's data aligned to [`ALIGNMENT`]
/// by a padding extra field (id `FB`, as torch writes).
pub fn zip(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in records {
        let offset = out.len();
        let unpadded = offset + 30 + name.len() + 4;
        let padding = (ALIGNMENT - unpadded % ALIGNMENT) % ALIGNMENT;
        let crc = crc32(data);
        let size = u32::try_from(data.len()).expect("records under 4 GB");
        let fields = |out: &mut Vec<u8>| {
            // version, flags, method (stored), time 00:00, date 1980-01-01 (the first DOS date:
            // the archive's bytes depend on nothing but the records; date 0 would read as
            // 1979-12-31)
            for v in [0u16, 0, 0, 0, DOS_1980_01_01] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(&size.to_le_bytes());
            out.extend_from_slice(&size.to_le_bytes());
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        };
        out.extend_from_slice(&LOCAL.to_le_bytes());
        fields(&mut out);
        out.extend_from_slice(&(4 + padding as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"FB");
        out.extend_from_slice(&(padding as u16).to_le_bytes());
        out.resize(out.len() + padding, b'Z');
        out.extend_from_slice(data);

        central.extend_from_slice(&CENTRAL.to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes()); // version made by
        fields(&mut central);
        for v in [0u16, 0, 0, 0] {
            central.extend_from_slice(&v.to_le_bytes()); // extra, comment, disk, internal
        }
        central.extend_from_slice(&0u32.to_le_bytes()); // external attributes
        central.extend_from_slice(&(offset as u32).to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let central_at = out.len();
    out.extend_from_slice(&central);
    out.extend_from_slice(&END.to_le_bytes());
    let count = records.len() as u16;
    for v in [0u16, 0, count, count] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&(central_at as u32).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// The records (name, data) of a zip archive of stored records, in the central directory's
/// order, each checked against its CRC. Records may not overlap (local header and data), so each
/// byte is checked once: 65,534 directory entries pointing at one 4 MB record once made the CRC
/// run over it 65,534 times.
pub fn unzip(raw: &[u8]) -> Result<Vec<(String, &[u8])>, String> {
    let truncated = || "the zip archive is truncated or damaged (no end of central directory)";
    let search_from = raw.len().saturating_sub(22 + 0xFFFF);
    let end = (search_from..raw.len().saturating_sub(21))
        .rev()
        .find(|&at| u32_at(raw, at) == Some(END))
        .ok_or_else(truncated)?;
    let count = u16_at(raw, end + 10).ok_or_else(truncated)?;
    let central_size = u32_at(raw, end + 12).ok_or_else(truncated)?;
    let central_at = u32_at(raw, end + 16).ok_or_else(truncated)?;
    if count == u16::MAX || central_size == u32::MAX || central_at == u32::MAX {
        return Err("a zip64 archive (over 4 GB or 65,535 records): not read".into());
    }
    let mut at = central_at as usize;
    let mut records = Vec::with_capacity(usize::from(count));
    for index in 0..count {
        let damaged =
            || format!("the zip archive's directory entry {index} is truncated or damaged");
        if u32_at(raw, at) != Some(CENTRAL) {
            return Err(damaged());
        }
        let field16 = |offset| u16_at(raw, at + offset).ok_or_else(damaged);
        let field32 = |offset| u32_at(raw, at + offset).ok_or_else(damaged);
        let (method, crc) = (field16(10)?, field32(16)?);
        let (packed, size) = (field32(20)?, field32(24)?);
        let (name_len, extra_len, comment_len) = (field16(28)?, field16(30)?, field16(32)?);
        let local = field32(42)? as usize;
        let name = raw
            .get(at + 46..at + 46 + usize::from(name_len))
            .ok_or_else(damaged)?;
        let name = String::from_utf8_lossy(name).into_owned();
        at += 46 + usize::from(name_len) + usize::from(extra_len) + usize::from(comment_len);
        if method != 0 || packed != size {
            return Err(format!(
                "record {name} is compressed (method {method}); torch stores records as they are"
            ));
        }
        let local_damaged = || format!("record {name}: its local header is truncated or damaged");
        if u32_at(raw, local) != Some(LOCAL) {
            return Err(local_damaged());
        }
        let name_len = u16_at(raw, local + 26).ok_or_else(local_damaged)?;
        let extra_len = u16_at(raw, local + 28).ok_or_else(local_damaged)?;
        let start = local + 30 + usize::from(name_len) + usize::from(extra_len);
        let data = raw
            .get(start..start + size as usize)
            .ok_or_else(|| format!("record {name} is truncated: {size} bytes promised"))?;
        records.push((name, local..start + data.len(), data, crc));
    }
    let mut spans: Vec<(&std::ops::Range<usize>, &str)> = records
        .iter()
        .map(|(name, span, ..)| (span, name.as_str()))
        .collect();
    spans.sort_by_key(|(span, _)| span.start);
    for pair in spans.windows(2) {
        let ((first, first_name), (second, second_name)) = (pair[0], pair[1]);
        if second.start < first.end {
            return Err(format!(
                "records {first_name} and {second_name} overlap in the archive: not a zip \
                 archive torch writes"
            ));
        }
    }
    records
        .into_iter()
        .map(|(name, _, data, crc)| {
            if crc32(data) == crc {
                Ok((name, data))
            } else {
                Err(format!(
                    "record {name} is damaged: its CRC-32 does not match"
                ))
            }
        })
        .collect()
}
