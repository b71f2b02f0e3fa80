//! What a state dict's pickle may name and build: the globals (the rebuild functions, the
//! storage classes, the dtypes), the storages tensors point into, and the tensors' views.

use super::*;

/// The callables a state dict's pickle may name; any other global is refused.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::pt) enum Global {
    OrderedDict,
    RebuildTensor,
    /// `_rebuild_tensor_v3`: as v2, then the dtype of an untyped storage.
    RebuildTensorV3,
    /// A storage class; `torch.storage.UntypedStorage` is [`StorageType::Bytes`], typed by a v3
    /// rebuild's dtype.
    Storage(StorageType),
    /// A dtype (`torch.float8_e4m3fn`, ...), the last argument of a v3 rebuild.
    Dtype(StorageType),
}

/// Element types of storages read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(in crate::pt) enum StorageType {
    F32,
    F16,
    BF16,
    F64,
    F8E4M3,
    /// An untyped storage's bytes, before a v3 rebuild gives them a dtype.
    Bytes,
}

impl StorageType {
    pub(in crate::pt) fn size(self) -> usize {
        match self {
            StorageType::F8E4M3 | StorageType::Bytes => 1,
            StorageType::F16 | StorageType::BF16 => 2,
            StorageType::F32 => 4,
            StorageType::F64 => 8,
        }
    }

    pub(in crate::pt) fn value(self, bytes: &[u8]) -> f32 {
        match self {
            StorageType::F32 => f32::from_le_bytes(bytes.try_into().expect("4 bytes")),
            StorageType::F16 => f16::from_le_bytes(bytes.try_into().expect("2 bytes")).to_f32(),
            StorageType::BF16 => {
                f32::from_bits(u32::from(u16::from_le_bytes(bytes.try_into().expect("2"))) << 16)
            }
            StorageType::F64 => f64::from_le_bytes(bytes.try_into().expect("8 bytes")) as f32,
            StorageType::F8E4M3 => crate::f8::decode(bytes[0]),
            StorageType::Bytes => unreachable!("a v3 rebuild types every untyped storage"),
        }
    }
}

impl Global {
    pub(in crate::pt) fn named(module: &str, name: &str) -> Result<Self, String> {
        Ok(match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensor,
            ("torch", "FloatStorage") => Global::Storage(StorageType::F32),
            ("torch", "HalfStorage") => Global::Storage(StorageType::F16),
            ("torch", "BFloat16Storage") => Global::Storage(StorageType::BF16),
            ("torch", "DoubleStorage") => Global::Storage(StorageType::F64),
            ("torch._utils", "_rebuild_tensor_v3") => Global::RebuildTensorV3,
            ("torch.storage", "UntypedStorage") => Global::Storage(StorageType::Bytes),
            ("torch", "float32") => Global::Dtype(StorageType::F32),
            ("torch", "float16") => Global::Dtype(StorageType::F16),
            ("torch", "bfloat16") => Global::Dtype(StorageType::BF16),
            ("torch", "float64") => Global::Dtype(StorageType::F64),
            ("torch", "float8_e4m3fn") => Global::Dtype(StorageType::F8E4M3),
            _ => {
                return Err(format!(
                    "the pickle names {module}.{name}, which a state dict of float tensors does \
                     not need: refused, not run"
                ));
            }
        })
    }
}

/// A storage a tensor points into: its type, its record's key and its element count.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::pt) struct Storage {
    pub(in crate::pt) kind: StorageType,
    pub(in crate::pt) key: String,
    pub(in crate::pt) numel: usize,
}

/// A tensor: a view of `size` with `stride` from `offset` into its storage.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::pt) struct TensorRef {
    pub(in crate::pt) storage: Storage,
    pub(in crate::pt) offset: usize,
    pub(in crate::pt) size: Vec<usize>,
    pub(in crate::pt) stride: Vec<usize>,
}

impl TensorRef {
    /// Its elements, read from its storage's record `data`, in row-major order.
    pub(in crate::pt) fn values(&self, data: &[u8]) -> Result<Vec<f32>, String> {
        let width = self.storage.kind.size();
        let want = self
            .storage
            .numel
            .checked_mul(width)
            .ok_or("storage too large")?;
        if data.len() != want {
            return Err(format!(
                "the storage record holds {} bytes; {} elements of {width} bytes need {want}",
                data.len(),
                self.storage.numel
            ));
        }
        // A state dict's tensor never holds more elements than its storage (no stride-0 views),
        // so nothing is allocated beyond what the file holds.
        let count = self
            .size
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .filter(|&n| n <= self.storage.numel)
            .ok_or_else(|| {
                format!(
                    "size {:?} holds more elements than the storage's {}",
                    self.size, self.storage.numel
                )
            })?;
        // The last element's index must lie in the storage.
        let last = self
            .size
            .iter()
            .zip(&self.stride)
            .try_fold(self.offset, |at, (&d, &s)| {
                at.checked_add(d.saturating_sub(1).checked_mul(s)?)
            });
        if count > 0 && last.is_none_or(|last| last >= self.storage.numel) {
            return Err(format!(
                "size {:?} with stride {:?} from offset {} reaches outside the storage's {} \
                 elements",
                self.size, self.stride, self.offset, self.storage.numel
            ));
        }
        let mut values = Vec::with_capacity(count);
        let mut index = vec![0usize; self.size.len()];
        for _ in 0..count {
            let at = self.offset
                + index
                    .iter()
                    .zip(&self.stride)
                    .map(|(i, s)| i * s)
                    .sum::<usize>();
            values.push(self.storage.kind.value(&data[at * width..(at + 1) * width]));
            for axis in (0..index.len()).rev() {
                index[axis] += 1;
                if index[axis] < self.size[axis] {
                    break;
                }
                index[axis] = 0;
            }
        }
        Ok(values)
    }
}
