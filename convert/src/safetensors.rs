//! The safetensors format, read and written here: an 8-byte little-endian header length, a JSON
//! header (each tensor's dtype, shape and byte range in the data; `__metadata__`: strings), then
//! the data. Only what a state dict of f32 or f16 tensors needs; every defect of a file is an
//! error that says which (truncation, a range outside the data, bytes no tensor covers, an
//! unknown dtype), never a panic.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Largest header read (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100 << 20;

/// Element types read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// 32-bit floats.
    F32,
    /// 16-bit floats.
    F16,
}

impl Dtype {
    fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 => 2,
        }
    }

    /// `values` as little-endian elements of this type (f16: rounded to nearest).
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Dtype::F16 => values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
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

/// Parses `bytes` as a safetensors file.
pub fn read(bytes: &[u8]) -> Result<File<'_>, String> {
    let (length, rest) = bytes.split_first_chunk::<8>().ok_or_else(|| {
        format!(
            "truncated: {} bytes, fewer than the 8 that give the header's length",
            bytes.len()
        )
    })?;
    let length = u64::from_le_bytes(*length);
    if length > MAX_HEADER {
        return Err(format!(
            "its header claims {length} bytes, more than the format's {MAX_HEADER}: not a \
             safetensors file"
        ));
    }
    let length = length as usize;
    if length > rest.len() {
        return Err(format!(
            "truncated: the header claims {length} bytes of JSON, {} follow",
            rest.len()
        ));
    }
    let (header, data) = rest.split_at(length);
    let header: Value = serde_json::from_slice(header)
        .map_err(|e| format!("its JSON header does not parse ({e}): not a safetensors file"))?;
    let Value::Object(entries) = header else {
        return Err("its JSON header is not an object: not a safetensors file".into());
    };
    let mut file = File::default();
    let mut ranges = Vec::new();
    for (name, entry) in entries {
        if name == "__metadata__" {
            file.metadata = metadata(&entry)?;
            continue;
        }
        let (tensor, range) = tensor(&name, &entry, data)?;
        ranges.push((range, name.clone()));
        file.tensors.insert(name, tensor);
    }
    ranges.sort();
    let mut covered = 0;
    for ((start, end), name) in &ranges {
        if *start != covered {
            let what = if *start < covered {
                "overlaps"
            } else {
                "leaves a gap before"
            };
            return Err(format!(
                "tensor {name}'s data (bytes {start}..{end}) {what} the previous tensor's, which \
                 end at byte {covered}"
            ));
        }
        covered = *end;
    }
    if covered != data.len() {
        return Err(format!(
            "{} trailing bytes after the last tensor's data (byte {covered} of {})",
            data.len() - covered,
            data.len()
        ));
    }
    Ok(file)
}

/// The `__metadata__` entry: strings only.
fn metadata(entry: &Value) -> Result<BTreeMap<String, String>, String> {
    let Value::Object(values) = entry else {
        return Err("__metadata__ is not an object of strings".into());
    };
    values
        .iter()
        .map(|(key, value)| match value {
            Value::String(text) => Ok((key.clone(), text.clone())),
            _ => Err(format!("__metadata__ {key} is not a string")),
        })
        .collect()
}

/// One tensor's entry, checked against the `data` it points into.
fn tensor<'a>(
    name: &str,
    entry: &Value,
    data: &'a [u8],
) -> Result<(Tensor<'a>, (usize, usize)), String> {
    let field = |key: &str| {
        entry
            .get(key)
            .ok_or_else(|| format!("tensor {name} has no {key}"))
    };
    let dtype = match field("dtype")?.as_str() {
        Some("F32") => Dtype::F32,
        Some("F16") => Dtype::F16,
        Some(other) => {
            return Err(format!(
                "tensor {name} is {other}; only F32 and F16 are read"
            ));
        }
        None => return Err(format!("tensor {name}'s dtype is not a string")),
    };
    let numbers = |key: &str| -> Result<Vec<usize>, String> {
        field(key)?
            .as_array()
            .and_then(|values| {
                values
                    .iter()
                    .map(|v| v.as_u64().and_then(|n| usize::try_from(n).ok()))
                    .collect()
            })
            .ok_or_else(|| format!("tensor {name}'s {key} is not a list of whole numbers"))
    };
    let shape = numbers("shape")?;
    let &[start, end] = numbers("data_offsets")?.as_slice() else {
        return Err(format!("tensor {name}'s data_offsets is not [begin, end]"));
    };
    if start > end || end > data.len() {
        return Err(format!(
            "tensor {name}'s data_offsets [{start}, {end}] lie outside the {} bytes of data \
             (truncated, or a wrong offset)",
            data.len()
        ));
    }
    let needed = shape
        .iter()
        .try_fold(dtype.size(), |bytes, &d| bytes.checked_mul(d));
    if needed != Some(end - start) {
        return Err(format!(
            "tensor {name}: shape {shape:?} of {} needs {} bytes, its data_offsets give {}",
            dtype.name(),
            needed.map_or("more than memory holds".into(), |n| n.to_string()),
            end - start
        ));
    }
    let tensor = Tensor {
        dtype,
        shape,
        data: &data[start..end],
    };
    Ok((tensor, (start, end)))
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
            (good[..good.len() - 1].to_vec(), "lie outside"),
            (trailing, "4 trailing bytes"),
            (u64::MAX.to_le_bytes().to_vec(), "more than the format's"),
            (with_header("[1, 2]"), "not an object"),
            (with_header("{not json"), "does not parse"),
            (
                with_header(r#"{"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}"#),
                "tensor a is BF16",
            ),
            (
                with_header(r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#),
                "needs 12 bytes",
            ),
            (
                with_header(
                    r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F16","shape":[2],"data_offsets":[12,16]}}"#,
                ),
                "overlaps",
            ),
            (
                with_header(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#),
                "leaves a gap",
            ),
            (
                with_header(r#"{"a":{"dtype":"F32","shape":[2]}}"#),
                "no data_offsets",
            ),
            (
                with_header(r#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#),
                "not a list of whole numbers",
            ),
            (with_header(r#"{"__metadata__":{"k":3}}"#), "not a string"),
            (
                with_header(
                    r#"{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}}"#,
                ),
                "more than memory holds",
            ),
        ];
        for (bytes, says) in cases {
            let error = read(&bytes).unwrap_err();
            assert!(error.contains(says), "{says:?}: {error}");
        }
    }
}
