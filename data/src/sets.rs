//! Sets of 28x28 grey images as other tools keep them, labelled or not: a CSV in the common
//! Kaggle layout (`label,pixel1,…,pixel784` or the pixels alone, a header line or none) and a
//! NumPy `.npy` array of shape `(N, 28, 28)` or `(N, 784)`. Each reader refuses bad input with an
//! error that names the file and what is wrong (a row of the wrong length by its line, a dtype or
//! shape it cannot take, a value outside 0-255, an empty set), and never panics.

use std::path::Path;

use crate::{Error, IMAGE_PIXELS, IMAGE_SIDE, Result};

/// Images (`IMAGE_PIXELS` bytes each, one after the other) and their labels where the file has
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    /// The pixels, image after image.
    pub pixels: Vec<u8>,
    /// One label per image, when the file holds them.
    pub labels: Option<Vec<u8>>,
}

impl Images {
    /// How many images.
    pub fn len(&self) -> usize {
        self.pixels.len() / IMAGE_PIXELS
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }
}

fn invalid(path: &Path, defect: String) -> Error {
    Error::Invalid {
        path: path.to_owned(),
        defect,
    }
}

/// A CSV of images: each row 784 pixel values (0-255), or a label (0-9) then 784 values; an
/// optional header line (any line whose first field is not a number, such as
/// `label,pixel1,…`). Every row must have the first data row's shape.
pub fn read_csv(path: &Path, text: &str) -> Result<Images> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let mut labelled = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if index == 0 && fields[0].parse::<f64>().is_err() {
            continue; // the header
        }
        let has_label = match (fields.len(), labelled) {
            (n, None) if n == IMAGE_PIXELS + 1 => true,
            (n, None) if n == IMAGE_PIXELS => false,
            (n, Some(true)) if n == IMAGE_PIXELS + 1 => true,
            (n, Some(false)) if n == IMAGE_PIXELS => false,
            (n, _) => {
                return Err(invalid(
                    path,
                    format!(
                        "line {number} has {n} values; a row is {IMAGE_PIXELS} pixels, or a label \
                         and {IMAGE_PIXELS} pixels, the same on every line"
                    ),
                ));
            }
        };
        labelled = Some(has_label);
        let value = |field: &str, what: &str, max: u8| -> Result<u8> {
            field
                .parse::<u8>()
                .ok()
                .filter(|&v| v <= max)
                .ok_or_else(|| {
                    invalid(
                        path,
                        format!("line {number}: {what} {field:?} is not a whole number 0-{max}"),
                    )
                })
        };
        let mut values = fields.iter();
        if has_label {
            labels.push(value(values.next().expect("a label"), "label", 9)?);
        }
        for field in values {
            pixels.push(value(field, "pixel", 255)?);
        }
    }
    if pixels.is_empty() {
        return Err(invalid(path, "holds no images".into()));
    }
    Ok(Images {
        pixels,
        labels: (labelled == Some(true)).then_some(labels),
    })
}

/// A NumPy `.npy` array (format versions 1-3) of shape `(N, 28, 28)` or `(N, 784)`, C order, of
/// unsigned bytes or of integers or floats that are whole numbers 0-255; no labels.
pub fn read_npy(path: &Path, bytes: &[u8]) -> Result<Images> {
    let bad = |defect: &str| invalid(path, defect.to_owned());
    let rest = bytes
        .strip_prefix(b"\x93NUMPY")
        .ok_or_else(|| bad("not a NumPy .npy file (no \\x93NUMPY magic)"))?;
    let (&[major, _minor], rest) = rest
        .split_first_chunk::<2>()
        .ok_or_else(|| bad("truncated .npy header"))?;
    let (length, rest) = match major {
        1 => rest
            .split_first_chunk::<2>()
            .map(|(n, r)| (usize::from(u16::from_le_bytes(*n)), r)),
        2 | 3 => rest
            .split_first_chunk::<4>()
            .map(|(n, r)| (u32::from_le_bytes(*n) as usize, r)),
        _ => return Err(bad("a .npy format version other than 1, 2 or 3")),
    }
    .ok_or_else(|| bad("truncated .npy header"))?;
    if rest.len() < length {
        return Err(bad("truncated .npy header"));
    }
    let (header, data) = rest.split_at(length);
    let header = std::str::from_utf8(header).map_err(|_| bad("a .npy header that is not text"))?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}'"))? + key.len() + 2;
        let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
        let end = match rest.chars().next()? {
            '(' => rest.find(')')? + 1,
            '\'' => rest[1..].find('\'')? + 2,
            _ => rest.find([',', '}']).unwrap_or(rest.len()),
        };
        Some(rest[..end].trim())
    };
    let descr = field("descr").ok_or_else(|| bad("a .npy header without 'descr'"))?;
    if field("fortran_order") != Some("False") {
        return Err(bad("a Fortran-order .npy array: save it in C order"));
    }
    let shape: Vec<usize> = field("shape")
        .and_then(|s| s.strip_prefix('(')?.strip_suffix(')').map(str::to_owned))
        .ok_or_else(|| bad("a .npy header without a shape"))?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|d| {
            d.parse::<usize>()
                .map_err(|_| bad("a .npy shape that is not numbers"))
        })
        .collect::<Result<_>>()?;
    let count = match shape.as_slice() {
        &[n, IMAGE_SIDE, IMAGE_SIDE] | &[n, IMAGE_PIXELS] => n,
        other => {
            return Err(invalid(
                path,
                format!("shape {other:?}; expected (N, 28, 28) or (N, 784)"),
            ));
        }
    };
    let descr = descr.trim_matches('\'');
    let (width, decode): (usize, fn(&[u8]) -> f64) = match descr {
        "|u1" | "u1" => (1, |b| f64::from(b[0])),
        "|i1" | "i1" => (1, |b| f64::from(b[0] as i8)),
        "<u2" => (2, |b| f64::from(u16::from_le_bytes([b[0], b[1]]))),
        "<i2" => (2, |b| f64::from(i16::from_le_bytes([b[0], b[1]]))),
        "<i4" => (4, |b| {
            f64::from(i32::from_le_bytes(b.try_into().expect("4")))
        }),
        "<i8" => (8, |b| i64::from_le_bytes(b.try_into().expect("8")) as f64),
        "<f4" => (4, |b| {
            f64::from(f32::from_le_bytes(b.try_into().expect("4")))
        }),
        "<f8" => (8, |b| f64::from_le_bytes(b.try_into().expect("8"))),
        other => {
            return Err(invalid(
                path,
                format!("dtype {other}; this reads uint8, little-endian int and float arrays"),
            ));
        }
    };
    let want = count
        .checked_mul(IMAGE_PIXELS)
        .and_then(|n| n.checked_mul(width))
        .ok_or_else(|| bad("a .npy shape too large"))?;
    if data.len() != want {
        return Err(invalid(
            path,
            format!(
                "the array's data is {} bytes; shape {shape:?} of {descr} needs {want}",
                data.len()
            ),
        ));
    }
    if count == 0 {
        return Err(bad("holds no images"));
    }
    let mut pixels = Vec::with_capacity(count * IMAGE_PIXELS);
    for (index, chunk) in data.chunks_exact(width).enumerate() {
        let value = decode(chunk);
        if !(value.fract() == 0.0 && (0.0..=255.0).contains(&value)) {
            return Err(invalid(
                path,
                format!(
                    "value {value} at index {index} (image {}) is not a whole number 0-255",
                    index / IMAGE_PIXELS
                ),
            ));
        }
        pixels.push(value as u8);
    }
    Ok(Images {
        pixels,
        labels: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(seed: usize) -> Vec<u8> {
        (0..IMAGE_PIXELS)
            .map(|i| ((i * 7 + seed) % 256) as u8)
            .collect()
    }

    fn csv_row(label: Option<u8>, pixels: &[u8]) -> String {
        let mut fields: Vec<String> = label.iter().map(u8::to_string).collect();
        fields.extend(pixels.iter().map(u8::to_string));
        fields.join(",")
    }

    #[test]
    fn csvs_with_or_without_labels_and_header_read_back() {
        let path = Path::new("set.csv");
        let (a, b) = (image(1), image(2));
        let header: Vec<String> = std::iter::once("label".to_owned())
            .chain((1..=IMAGE_PIXELS).map(|i| format!("pixel{i}")))
            .collect();
        let labelled = format!(
            "{}\n{}\n{}\n",
            header.join(","),
            csv_row(Some(3), &a),
            csv_row(Some(9), &b)
        );
        let read = read_csv(path, &labelled).unwrap();
        assert_eq!(read.pixels, [a.clone(), b.clone()].concat());
        assert_eq!(read.labels, Some(vec![3, 9]));
        let bare = format!("{}\r\n{}\r\n", csv_row(None, &a), csv_row(None, &b));
        let read = read_csv(path, &bare).unwrap();
        assert_eq!((read.len(), read.labels), (2, None));
    }

    #[test]
    fn bad_csvs_are_errors_that_name_the_line() {
        let path = Path::new("set.csv");
        let good = csv_row(None, &image(1));
        for (text, says) in [
            (format!("{good}\n1,2,3\n"), "line 2 has 3 values"),
            (
                format!("{good}\n{}\n", csv_row(Some(1), &image(2))),
                "line 2 has 785",
            ),
            (
                format!("{},700", csv_row(None, &image(1)[1..])),
                "line 1: pixel \"700\"",
            ),
            (csv_row(Some(12), &image(1)), "line 1: label \"12\""),
            (
                format!("{},x", csv_row(None, &image(1)[1..])),
                "line 1: pixel \"x\"",
            ),
            ("label,pixel1\n".to_owned(), "holds no images"),
            (String::new(), "holds no images"),
        ] {
            let error = read_csv(path, &text).unwrap_err().to_string();
            assert!(
                error.contains("set.csv") && error.contains(says),
                "{says}: {error}"
            );
        }
    }

    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        bytes.extend(data);
        bytes
    }

    #[test]
    fn npy_arrays_of_bytes_or_whole_floats_read_back() {
        let path = Path::new("set.npy");
        let pixels = [image(1), image(2)].concat();
        for shape in ["(2, 28, 28)", "(2, 784)"] {
            let read = read_npy(path, &npy("|u1", shape, &pixels)).unwrap();
            assert_eq!(read.pixels, pixels);
        }
        let floats: Vec<u8> = pixels
            .iter()
            .flat_map(|&p| f32::from(p).to_le_bytes())
            .collect();
        assert_eq!(
            read_npy(path, &npy("<f4", "(2, 784)", &floats))
                .unwrap()
                .pixels,
            pixels
        );
    }

    #[test]
    fn bad_npy_files_are_errors_that_say_what() {
        let path = Path::new("set.npy");
        let pixels = image(1);
        let half: Vec<u8> = [0.5f32; IMAGE_PIXELS]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        for (bytes, says) in [
            (
                npy("|u1", "(1, 28, 27)", &pixels[..756]),
                "shape [1, 28, 27]",
            ),
            (npy("|u1", "(2, 784)", &pixels), "needs 1568"),
            (npy("<c8", "(1, 784)", &pixels), "dtype <c8"),
            (npy("<f4", "(1, 784)", &half), "value 0.5 at index 0"),
            (npy("|u1", "(0, 784)", &[]), "holds no images"),
            (b"\x93NUMPY\x01\x00\xff".to_vec(), "truncated"),
            (b"PK\x03\x04".to_vec(), "not a NumPy"),
        ] {
            let error = read_npy(path, &bytes).unwrap_err().to_string();
            assert!(error.contains(says), "{says}: {error}");
        }
    }
}
