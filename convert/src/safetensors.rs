//! The safetensors format: an 8-byte little-endian header length, a JSON header (each tensor's
//! dtype, shape and byte range in the data; `__metadata__`: strings), then the data. Read
//! through the `safetensors` crate, whose checks every file passes first; each defect is an
//! error that says which (truncation, offsets that do not fit the shapes, bytes no tensor
//! covers, an unread dtype), never a panic. Written here: the crate's writer orders the header
//! by hash map and the tensors by dtype and name, and exports keep the state dict's order.

use std::collections::BTreeMap;

use ::safetensors::{SafeTensorError, SafeTensors};
use serde_json::{Map, Value};

/// Largest header read: the `safetensors` crate's limit.
const MAX_HEADER: u64 = 100_000_000;

/// Element types read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// 32-bit floats.
    F32,
    /// 16-bit floats.
    F16,
    /// 8-bit floats, torch's `float8_e4m3fn` ([`crate::f8`]).
    F8E4M3,
}

impl Dtype {
    fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::F8E4M3 => "F8_E4M3",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 => 2,
            Dtype::F8E4M3 => 1,
        }
    }

    /// `values` as little-endian elements of this type (f16 and f8: rounded to nearest).
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Dtype::F16 => values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
            Dtype::F8E4M3 => values.iter().map(|v| crate::f8::encode(*v)).collect(),
        }
    }
}

/// One tensor: its dtype, shape and little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor<'a> {
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape`'s product × `dtype.size()` bytes.
    pub data: &'a [u8],
}

impl Tensor<'_> {
    /// The elements as f32.
    pub fn values(&self) -> Vec<f32> {
        match self.dtype {
            Dtype::F32 => self
                .data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => (0..self.data.len() / 2)
                .map(|i| infer::format::f16_at(self.data, i))
                .collect(),
            Dtype::F8E4M3 => self.data.iter().map(|b| crate::f8::decode(*b)).collect(),
        }
    }
}

/// A parsed file: tensors by name, and the metadata.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct File<'a> {
    /// The tensors, by name.
    pub tensors: BTreeMap<String, Tensor<'a>>,
    /// `__metadata__`.
    pub metadata: BTreeMap<String, String>,
}

/// Parses `bytes` as a safetensors file: the `safetensors` crate checks the header (its
/// length, its JSON, each tensor's offsets against its shape and dtype, the data covered end to
/// end with no gap or overlap); this names what it found wrong, and reads F32, F16 and F8_E4M3 only.
pub fn read(bytes: &[u8]) -> Result<File<'_>, String> {
    let (length, metadata) =
        SafeTensors::read_metadata(bytes).map_err(|error| explain(bytes, error))?;
    let data = &bytes[8 + length..];
    let mut file = File {
        metadata: metadata
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        ..File::default()
    };
    for (name, info) in metadata.tensors() {
        let dtype = match info.dtype {
            ::safetensors::Dtype::F32 => Dtype::F32,
            ::safetensors::Dtype::F16 => Dtype::F16,
            ::safetensors::Dtype::F8_E4M3 => Dtype::F8E4M3,
            other => {
                return Err(format!(
                    "tensor {name} is {other}; only F32, F16 and F8_E4M3 are read"
                ));
            }
        };
        let (start, end) = info.data_offsets;
        let tensor = Tensor {
            dtype,
            shape: info.shape.clone(),
            data: &data[start..end],
        };
        file.tensors.insert(name, tensor);
    }
    Ok(file)
}

/// The crate's `error` for `bytes`, said with the numbers that show it.
fn explain(bytes: &[u8], error: SafeTensorError) -> String {
    let claimed = bytes
        .first_chunk::<8>()
        .map_or(0, |length| u64::from_le_bytes(*length));
    let follow = bytes.len().saturating_sub(8);
    match error {
        SafeTensorError::HeaderTooSmall => format!(
            "truncated: {} bytes, fewer than the 8 that give the header's length",
            bytes.len()
        ),
        SafeTensorError::HeaderTooLarge => format!(
            "its header claims {claimed} bytes, more than the format's {MAX_HEADER}: not a \
             safetensors file"
        ),
        SafeTensorError::InvalidHeaderLength => {
            format!("truncated: the header claims {claimed} bytes of JSON, {follow} follow")
        }
        SafeTensorError::InvalidHeader(e) => {
            format!("its header is not UTF-8 ({e}): not a safetensors file")
        }
        SafeTensorError::InvalidHeaderDeserialization(e) => format!(
            "its JSON header does not parse as a table of tensors ({e}): not a safetensors file"
        ),
        SafeTensorError::InvalidOffset(name) => format!(
            "tensor {name}'s data_offsets do not begin where the previous tensor's data ends \
             (a gap or an overlap)"
        ),
        SafeTensorError::TensorInvalidInfo => {
            "a tensor's data_offsets cover a different number of bytes than its shape and \
             dtype need"
                .into()
        }
        SafeTensorError::ValidationOverflow => {
            "a tensor's shape needs more bytes than memory holds".into()
        }
        SafeTensorError::MetadataIncompleteBuffer => format!(
            "the tensors' data_offsets do not end at the end of the file's {follow} bytes after \
             the length (truncated, trailing bytes, or a wrong offset)"
        ),
        other => format!("{other}"),
    }
}

/// The file's bytes: `tensors` in the given order, then `metadata`, the header padded with
/// spaces to a multiple of 8 bytes as the format's reference writer does.
pub fn write(tensors: &[(String, Tensor<'_>)], metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let mut header = Map::new();
    header.insert(
        "__metadata__".into(),
        Value::Object(
            metadata
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        ),
    );
    let mut offset = 0;
    for (name, tensor) in tensors {
        let end = offset + tensor.data.len();
        let entry = serde_json::json!({
            "dtype": tensor.dtype.name(),
            "shape": tensor.shape,
            "data_offsets": [offset, end],
        });
        header.insert(name.clone(), entry);
        offset = end;
    }
    let mut json = serde_json::to_vec(&Value::Object(header)).expect("a JSON object");
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut bytes = Vec::with_capacity(8 + json.len() + offset);
    bytes.extend_from_slice(&(json.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&json);
    for (_, tensor) in tensors {
        bytes.extend_from_slice(tensor.data);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let a: Vec<u8> = [1.0f32, -2.0, 0.5, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let b: Vec<u8> = [0.25f32, 8.0]
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        let tensors = vec![
            (
                "a".to_owned(),
                Tensor {
                    dtype: Dtype::F32,
                    shape: vec![2, 2],
                    data: &a,
                },
            ),
            (
                "b".to_owned(),
                Tensor {
                    dtype: Dtype::F16,
                    shape: vec![2],
                    data: &b,
                },
            ),
        ];
        let metadata = BTreeMap::from([("activation".to_owned(), "relu".to_owned())]);
        write(&tensors, &metadata)
    }

    #[test]
    fn written_files_read_back() {
        let bytes = sample();
        let file = read(&bytes).unwrap();
        assert_eq!(file.tensors["a"].values(), [1.0, -2.0, 0.5, 4.0]);
        assert_eq!(file.tensors["b"].shape, [2]);
        assert_eq!(file.tensors["b"].values(), [0.25, 8.0]);
        assert_eq!(file.metadata["activation"], "relu");
        assert_eq!((bytes.len() - 8 - 20) % 8, 0, "header padded to 8 bytes");
    }

    /// `sample()` with its JSON header replaced (keeping the data).
    fn with_header(header: &str) -> Vec<u8> {
        let bytes = sample();
        let length = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&bytes[8 + length..]);
        out
    }

    #[test]
    fn each_defect_is_named() {
        let good = sample();
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"junk");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good[..5].to_vec(), "fewer than the 8"),
            (good[..30].to_vec(), "truncated: the header claims"),
            (good[..good.len() - 1].to_vec(), "do not end at the end"),
            (trailing, "do not end at the end"),
            (u64::MAX.to_le_bytes().to_vec(), "more than the format's"),
            (with_header("[1, 2]"), "does not parse"),
            (with_header("{not json"), "does not parse"),
            (
                with_header(r#"{"a":{"dtype":"BF16","shape":[10],"data_offsets":[0,20]}}"#),
                "tensor a is BF16",
            ),
            (
                with_header(r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#),
                "cover a different number of bytes",
            ),
            (
                with_header(
                    r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F16","shape":[2],"data_offsets":[12,16]}}"#,
                ),
                "tensor b's data_offsets do not begin",
            ),
            (
                with_header(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#),
                "tensor a's data_offsets do not begin",
            ),
            (
                with_header(r#"{"a":{"dtype":"F32","shape":[2]}}"#),
                "data_offsets",
            ),
            (
                with_header(r#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#),
                "does not parse",
            ),
            (with_header(r#"{"__metadata__":{"k":3}}"#), "does not parse"),
            (
                with_header(
                    r#"{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}}"#,
                ),
                "more bytes than memory holds",
            ),
        ];
        for (bytes, says) in cases {
            let error = read(&bytes).unwrap_err();
            assert!(error.contains(says), "{says:?}: {error}");
        }
    }
}
