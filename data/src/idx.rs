//! IDX files (magic, big-endian dimensions, u8 data), plain or gzip-compressed.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{Error, IMAGE_PIXELS, IMAGE_SIDE, NUM_CLASSES, Result};

/// Decompressed files larger than this are refused (a 60k-image set is 47 MB).
const MAX_DECOMPRESSED: u64 = 1 << 30;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const IDX_UNSIGNED_BYTE: u8 = 0x08;

/// Images and their labels, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// `len() * IMAGE_PIXELS` pixels, image after image, row-major.
    pub images: Vec<u8>,
    /// One label per image, each `< NUM_CLASSES`.
    pub labels: Vec<u8>,
}

impl Split {
    /// Loads and cross-checks an images file and a labels file.
    pub fn load(images: &Path, labels: &Path) -> Result<Self> {
        Self::from_bytes(
            images,
            &read_maybe_gzip(images)?,
            labels,
            &read_maybe_gzip(labels)?,
        )
    }

    /// Parses decompressed IDX bytes; the paths only name the files in errors.
    pub fn from_bytes(
        images_path: &Path,
        images: &[u8],
        labels_path: &Path,
        labels: &[u8],
    ) -> Result<Self> {
        let images_data = images_from_bytes(images_path, images)?;
        let labels_data = parse(labels_path, labels, &[None])?;
        let image_count = images_data.len() / IMAGE_PIXELS;
        if image_count != labels_data.len() {
            return Err(Error::CountMismatch {
                images: images_path.to_owned(),
                image_count,
                labels: labels_path.to_owned(),
                label_count: labels_data.len(),
            });
        }
        if let Some(index) = labels_data
            .iter()
            .position(|&l| usize::from(l) >= NUM_CLASSES)
        {
            return Err(invalid(
                labels_path,
                format!(
                    "label {} at index {index} is not below {NUM_CLASSES}",
                    labels_data[index]
                ),
            ));
        }
        Ok(Self {
            images: images_data.to_vec(),
            labels: labels_data.to_vec(),
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels of image `index`.
    pub fn image(&self, index: usize) -> &[u8] {
        &self.images[index * IMAGE_PIXELS..(index + 1) * IMAGE_PIXELS]
    }
}

/// The pixels of an IDX images file on its own (`n × 28 × 28` bytes, decompressed), image after
/// image; `path` only names the file in errors.
pub fn images_from_bytes<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a [u8]> {
    parse(path, bytes, &[None, Some(IMAGE_SIDE), Some(IMAGE_SIDE)])
}

/// Reads a file, decompressing it when it starts with the gzip magic.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let raw = crate::input::read(path, crate::input::MAX_DATA).map_err(|cause| Error::Io {
        path: path.to_owned(),
        cause,
    })?;
    decompress_maybe_gzip(path, raw)
}

/// `raw` itself, or its decompression when it starts with the gzip magic (at most 1 GiB); `path`
/// only names the file in errors.
pub fn decompress_maybe_gzip(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>> {
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(&raw[..])
        .take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut out)
        .map_err(|e| invalid(path, format!("corrupt or truncated gzip data ({e})")))?;
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(invalid(
            path,
            format!("decompresses to more than {MAX_DECOMPRESSED} bytes"),
        ));
    }
    Ok(out)
}

/// Checks an IDX header against `dims` (`None`: any size) and returns the data bytes, which must
/// be exactly as many as the dimensions declare.
fn parse<'a>(path: &Path, bytes: &'a [u8], dims: &[Option<usize>]) -> Result<&'a [u8]> {
    let header_len = 4 + 4 * dims.len();
    if bytes.len() < 4 {
        return Err(invalid(
            path,
            format!("truncated: {} bytes, no IDX header", bytes.len()),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(invalid(
            path,
            format!(
                "bad magic {:02x?}: not an IDX file (or a gzip file cut short)",
                &bytes[..4]
            ),
        ));
    }
    if bytes[2] != IDX_UNSIGNED_BYTE {
        return Err(invalid(
            path,
            format!("IDX data type 0x{:02x}, expected 0x08 (u8)", bytes[2]),
        ));
    }
    if usize::from(bytes[3]) != dims.len() {
        return Err(invalid(
            path,
            format!("{} dimensions, expected {}", bytes[3], dims.len()),
        ));
    }
    if bytes.len() < header_len {
        return Err(invalid(
            path,
            format!("truncated inside the IDX header ({} bytes)", bytes.len()),
        ));
    }
    let mut count: u64 = 1;
    for (axis, expected) in dims.iter().enumerate() {
        let at = 4 + 4 * axis;
        let size = u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        if let Some(expected) = *expected
            && size as usize != expected
        {
            return Err(invalid(
                path,
                format!("dimension {axis} is {size}, expected {expected} (images must be 28x28)"),
            ));
        }
        count *= u64::from(size);
    }
    let data = &bytes[header_len..];
    if (data.len() as u64) < count {
        return Err(invalid(
            path,
            format!(
                "truncated: header declares {count} data bytes, file holds {}",
                data.len()
            ),
        ));
    }
    if data.len() as u64 > count {
        return Err(invalid(
            path,
            format!(
                "{} bytes after the {count} data bytes the header declares",
                data.len() as u64 - count
            ),
        ));
    }
    Ok(data)
}

fn invalid(path: &Path, defect: String) -> Error {
    Error::Invalid {
        path: PathBuf::from(path),
        defect,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, IDX_UNSIGNED_BYTE, dims.len() as u8];
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    fn pair(n: u32) -> (Vec<u8>, Vec<u8>) {
        let pixels: Vec<u8> = (0..n as usize * IMAGE_PIXELS).map(|i| i as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        (idx(&[n, 28, 28], &pixels), idx(&[n], &labels))
    }

    fn load(images: &[u8], labels: &[u8]) -> Result<Split> {
        Split::from_bytes(Path::new("img.idx"), images, Path::new("lbl.idx"), labels)
    }

    fn defect(result: Result<Split>) -> String {
        let message = result.expect_err("must be an error").to_string();
        assert!(
            message.contains(".idx"),
            "error must name the file: {message}"
        );
        message
    }

    #[test]
    fn valid_pair_loads() {
        let (images, labels) = pair(3);
        let split = load(&images, &labels).unwrap();
        assert_eq!(split.len(), 3);
        assert_eq!(split.labels, vec![0, 1, 2]);
        assert_eq!(split.image(1)[0], (IMAGE_PIXELS % 256) as u8);
    }

    #[test]
    fn truncated_images_are_an_error() {
        let (images, labels) = pair(2);
        for cut in [0, 3, 7, 15, images.len() - 1] {
            let message = defect(load(&images[..cut], &labels));
            assert!(message.contains("truncated"), "{cut}: {message}");
        }
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let (mut images, labels) = pair(2);
        images.push(0);
        assert!(defect(load(&images, &labels)).contains("after"));
    }

    #[test]
    fn bad_magic_is_an_error() {
        let (mut images, labels) = pair(2);
        images[1] = 7;
        assert!(defect(load(&images, &labels)).contains("magic"));
    }

    #[test]
    fn wrong_image_size_is_an_error() {
        let images = idx(&[1, 32, 32], &[0; 32 * 32]);
        let (_, labels) = pair(1);
        assert!(defect(load(&images, &labels)).contains("28x28"));
    }

    #[test]
    fn count_mismatch_is_an_error() {
        let (images, _) = pair(3);
        let (_, labels) = pair(2);
        assert!(defect(load(&images, &labels)).contains("2 labels"));
    }

    #[test]
    fn label_out_of_range_is_an_error() {
        let (images, _) = pair(1);
        let labels = idx(&[1], &[10]);
        assert!(defect(load(&images, &labels)).contains("not below 10"));
    }

    #[test]
    fn gzip_roundtrip_and_corruption() {
        let (images, _) = pair(2);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&images).unwrap();
        let gz = gz.finish().unwrap();
        let dir = std::env::temp_dir().join(format!("idx-gz-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.gz");
        std::fs::write(&good, &gz).unwrap();
        assert_eq!(read_maybe_gzip(&good).unwrap(), images);

        let truncated = dir.join("truncated.gz");
        std::fs::write(&truncated, &gz[..gz.len() / 2]).unwrap();
        let message = read_maybe_gzip(&truncated).unwrap_err().to_string();
        assert!(
            message.contains("truncated.gz") && message.contains("gzip"),
            "{message}"
        );

        let mut flipped = gz.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0xff;
        let corrupt = dir.join("corrupt.gz");
        std::fs::write(&corrupt, &flipped).unwrap();
        // A flipped byte in deflate data is caught by the decoder or by the CRC-32 trailer.
        let message = read_maybe_gzip(&corrupt).unwrap_err().to_string();
        assert!(message.contains("corrupt.gz"), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_file_names_the_path() {
        let message = read_maybe_gzip(Path::new("/nonexistent/x.gz"))
            .unwrap_err()
            .to_string();
        assert!(message.contains("/nonexistent/x.gz"), "{message}");
    }
}
