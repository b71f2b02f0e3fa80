//! PyTorch's checkpoint format for a state dict of tensors, what `torch.save(model.state_dict(),
//! path)` writes, read and written here: a zip archive of stored (uncompressed) records under one
//! folder, `archive/data.pkl` (the dict as a pickle, protocol 2), one record per tensor's storage
//! (`archive/data/0`, little-endian), `archive/byteorder` and `archive/version`.
//!
//! The pickle written uses only the opcodes and the globals torch itself writes for such a dict
//! (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` with `torch.FloatStorage` or
//! `HalfStorage`; for 8-bit floats, which have no typed storage, `_rebuild_tensor_v3` with
//! `torch.storage.UntypedStorage` and the dtype `torch.float8_e4m3fn`), so
//! `torch.load(path, weights_only=True)` accepts it. The reader interprets the
//! same small set and nothing else: a pickle that names any other global or uses any other
//! opcode is refused by name, never run. Every defect (a truncated or damaged archive, a record's
//! CRC, a storage of the wrong length, a tensor outside its storage) is an error that says which.

use std::collections::BTreeMap;

use half::f16;

use crate::safetensors::Dtype;

mod pickle;
mod zip;

use pickle::*;
pub use zip::{unzip, zip};

/// The folder every record sits in.
const ARCHIVE: &str = "archive";

/// Alignment of each record's data in the file, as torch writes it (so `torch.load(mmap=True)`
/// works too).
const ALIGNMENT: usize = 64;

/// Largest pickle read: a state dict of a few tensors needs a few kilobytes.
const MAX_PICKLE: usize = 16 << 20;

/// Most values the pickle's memo may copy in all, and most entries in one dict: far beyond a
/// state dict's needs, and they keep a hostile pickle from growing memory or time without bound
/// by fetching the same large value again and again.
const MAX_COPIED: usize = 1 << 20;
const MAX_ENTRIES: usize = 4096;
/// Most values a pickle may make, all opcodes together (a state dict of 8 layers makes a few
/// hundred): a 15 MB pickle of 15 M `None`s once took 4.2 GB.
const MAX_VALUES: usize = 1 << 20;
/// Deepest nesting of containers (a state dict nests 4 deep): every walk of a value (drop,
/// clone, count, compare) recurses that deep at most, so a pickle of a million nested tuples
/// cannot overflow the stack.
const MAX_DEPTH: usize = 32;

/// A state dict's tensor: its name, shape and values (row-major, as f32).
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// A state dict as `torch.save` writes it: `tensors` (name, shape, values) stored as `dtype`.
pub fn write(tensors: &[NamedTensor], dtype: Dtype) -> Vec<u8> {
    write_each(&tensors.iter().map(|t| (t, dtype)).collect::<Vec<_>>())
}

/// [`write`], each tensor stored as its own type (an f8 state dict keeps its biases in f32).
pub fn write_each(tensors: &[(&NamedTensor, Dtype)]) -> Vec<u8> {
    let mut records: Vec<(String, Vec<u8>)> =
        vec![(format!("{ARCHIVE}/data.pkl"), pickle_state_dict(tensors))];
    records.push((format!("{ARCHIVE}/byteorder"), b"little".to_vec()));
    for (key, ((_, _, values), dtype)) in tensors.iter().enumerate() {
        records.push((format!("{ARCHIVE}/data/{key}"), dtype.encode(values)));
    }
    records.push((format!("{ARCHIVE}/version"), b"3\n".to_vec()));
    zip(&records)
}

/// The tensors of a `.pt` state dict (name → shape and values as f32), in the dict's order.
pub fn read(raw: &[u8]) -> Result<Vec<NamedTensor>, String> {
    read_with(raw, |_, _| Ok(()))
}

/// [`read`], with each tensor's name and shape passed to `accept` before any of its values are
/// read, so a caller can refuse what its template has no place for before it costs anything.
/// The tensors may hold no more elements, all together, than their storages (each counted
/// once): overlapping views of one storage, which a hostile file can repeat thousands of times
/// to expand one record without bound, are refused.
pub fn read_with(
    raw: &[u8],
    mut accept: impl FnMut(&str, &[usize]) -> Result<(), String>,
) -> Result<Vec<NamedTensor>, String> {
    if !raw.starts_with(b"PK\x03\x04") {
        return Err(
            "not a zip archive (PyTorch's format since 1.6); a legacy torch.save file is not read"
                .into(),
        );
    }
    let records = unzip(raw)?;
    let folder = records
        .first()
        .and_then(|(name, _)| name.split_once('/'))
        .map(|(folder, _)| folder.to_owned())
        .ok_or("the archive's first record is not in a folder, as torch writes them")?;
    let record = |name: &str| {
        let path = format!("{folder}/{name}");
        records
            .iter()
            .find(|(n, _)| *n == path)
            .map(|(_, data)| *data)
            .ok_or_else(|| format!("no record {path} in the archive"))
    };
    if let Ok(order) = record("byteorder")
        && order != b"little"
    {
        return Err(format!(
            "byte order {:?}; only little-endian is read",
            String::from_utf8_lossy(order)
        ));
    }
    let pickle = record("data.pkl")?;
    if pickle.len() > MAX_PICKLE {
        return Err(format!(
            "data.pkl holds {} bytes, more than a state dict needs",
            pickle.len()
        ));
    }
    let dict = match Unpickler::default().run(pickle)? {
        Value::Dict(entries) => entries,
        other => return Err(format!("data.pkl holds {}, not a dict", other.kind())),
    };
    let mut views = Vec::new();
    let mut storages = BTreeMap::new();
    let mut elements = 0usize;
    for (name, value) in dict {
        let Value::Str(name) = name else {
            return Err(format!(
                "a key of the dict is {}, not a string",
                name.kind()
            ));
        };
        let Value::Tensor(tensor) = value else {
            return Err(format!("{name} is {}, not a tensor", value.kind()));
        };
        accept(&name, &tensor.size)?;
        storages.insert(tensor.storage.key.clone(), tensor.storage.numel);
        elements = tensor
            .size
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .and_then(|count| elements.checked_add(count))
            .ok_or_else(|| format!("{name}: a size too large"))?;
        views.push((name, tensor));
    }
    let held: usize = storages.values().fold(0usize, |n, &m| n.saturating_add(m));
    if elements > held {
        return Err(format!(
            "the tensors hold {elements} elements but their storages only {held}: views that \
             overlap (one storage read again and again) are not read"
        ));
    }
    let mut tensors = Vec::new();
    for (name, tensor) in views {
        let data = record(&format!("data/{}", tensor.storage.key))?;
        let values = tensor
            .values(data)
            .map_err(|e| format!("{name} (storage {}): {e}", tensor.storage.key))?;
        tensors.push((name, tensor.size, values));
    }
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::zip::*;
    use super::*;

    fn tensors() -> Vec<NamedTensor> {
        vec![
            (
                "mlp.0.weight".into(),
                vec![3, 4],
                (0..12).map(|i| i as f32 * 0.25 - 1.0).collect(),
            ),
            ("mlp.0.bias".into(), vec![3], vec![0.5, -0.5, 1.5]),
        ]
    }

    #[test]
    fn written_state_dicts_read_back_in_both_dtypes() {
        for dtype in [Dtype::F32, Dtype::F16] {
            let raw = write(&tensors(), dtype);
            assert_eq!(read(&raw).unwrap(), tensors(), "{dtype:?}");
            // Every record's data is aligned as torch aligns it.
            for (name, data) in unzip(&raw).unwrap() {
                let offset = data.as_ptr() as usize - raw.as_ptr() as usize;
                assert_eq!(offset % ALIGNMENT, 0, "{name}");
            }
        }
    }

    /// An archive of [`tensors`] with `data.pkl` replaced.
    fn with_pickle(pickle: Vec<u8>) -> Vec<u8> {
        with_pickle_of(&write(&tensors(), Dtype::F32), pickle)
    }

    #[test]
    fn damaged_files_are_errors_that_say_what() {
        let good = write(&tensors(), Dtype::F32);
        let pickle = unzip(&good).unwrap()[0].1.to_vec();
        let error = |raw: &[u8]| read(raw).unwrap_err();
        // Truncated anywhere: an error, never a panic.
        for cut in [0, 4, 100, good.len() / 2, good.len() - 1] {
            let _ = error(&good[..cut]);
        }
        assert!(error(&good[..good.len() - 10]).contains("truncated"));
        // A flipped byte in a storage.
        let mut flipped = good.clone();
        let storage_at = unzip(&good).unwrap()[2].1.as_ptr() as usize - good.as_ptr() as usize;
        flipped[storage_at] ^= 1;
        assert!(error(&flipped).contains("CRC"));
        // A global a state dict does not need: named, refused, not run.
        let global = b"collections\nOrderedDict";
        let at = pickle
            .windows(global.len())
            .position(|w| w == global)
            .unwrap();
        let mut evil = pickle.clone();
        evil.splice(at..at + global.len(), b"posix\nsystem".iter().copied());
        let message = error(&with_pickle(evil));
        assert!(message.contains("posix.system"), "{message}");
        assert!(message.contains("refused"), "{message}");
        // An opcode outside the set.
        let mut other = pickle.clone();
        other.insert(2, b'I'); // INT, a text opcode
        assert!(error(&with_pickle(other)).contains("opcode 0x49"));
        // A storage whose record is shorter than its element count.
        let raw = write(&tensors(), Dtype::F32);
        let mut records: Vec<(String, Vec<u8>)> = unzip(&raw)
            .unwrap()
            .into_iter()
            .map(|(name, data)| (name, data.to_vec()))
            .collect();
        records[2].1.truncate(40);
        let message = error(&zip(&records));
        assert!(
            message.contains("mlp.0.weight") && message.contains("40 bytes"),
            "{message}"
        );
        // Not a zip at all.
        assert!(error(b"\x80\x02}q\x00.").contains("not a zip"));
    }

    proptest::proptest! {
        /// Damage anywhere, in the archive or (re-zipped with good CRCs) in the pickle itself:
        /// an error or a state dict, never a panic.
        #[test]
        fn damaged_archives_and_pickles_never_panic(
            flips in proptest::collection::vec((0usize..1 << 20, 0u8..=255), 1..6),
            cut in 0usize..1 << 20,
        ) {
            let good = write(&tensors(), Dtype::F16);
            let mut raw = good.clone();
            for &(at, byte) in &flips {
                let at = at % raw.len();
                raw[at] = byte;
            }
            let _ = read(&raw);
            let _ = read(&good[..cut % good.len()]);
            let mut pickle = unzip(&good).unwrap()[0].1.to_vec();
            for &(at, byte) in &flips {
                let at = at % pickle.len();
                pickle[at] = byte;
            }
            let _ = read(&with_pickle(pickle.clone()));
            pickle.truncate(cut % pickle.len());
            let _ = read(&with_pickle(pickle));
        }
    }

    /// What PyTorch 2.15 itself writes (`torch.save(model.state_dict(), path)` of the template
    /// 784-3-10, with the module's `_metadata`, its zip data descriptors and alignment), each
    /// value `((i·7 + k) mod 13 − 6) / 64` for element i of tensor k: made by the script in the
    /// test data's README.
    #[test]
    fn reads_what_torch_save_writes() {
        let raw = include_bytes!("../../tests/data/torch_saved.pt");
        let tensors = read(raw).unwrap();
        let shapes = [
            ("mlp.0.weight", vec![3, 784]),
            ("mlp.0.bias", vec![3]),
            ("mlp.2.weight", vec![10, 3]),
            ("mlp.2.bias", vec![10]),
        ];
        assert_eq!(tensors.len(), shapes.len());
        for (k, ((name, shape, values), (want_name, want_shape))) in
            tensors.iter().zip(shapes).enumerate()
        {
            assert_eq!((name.as_str(), shape), (want_name, &want_shape));
            for (i, &v) in values.iter().enumerate() {
                assert_eq!(
                    v,
                    ((i * 7 + k) % 13) as f32 / 64.0 - 6.0 / 64.0,
                    "{name}[{i}]"
                );
            }
        }
    }

    #[test]
    fn pickles_that_would_grow_without_bound_are_refused() {
        // A list of 1,000 ints, memoised, then fetched 5,000 times: 5 million copies.
        let mut blowup = vec![op::PROTO, 2, op::EMPTY_LIST, op::MARK];
        for _ in 0..1000 {
            blowup.extend([op::BININT1, 7]);
        }
        blowup.extend([op::APPENDS, op::BINPUT, 0]);
        for _ in 0..5000 {
            blowup.extend([op::BINGET, 0]);
        }
        blowup.push(op::STOP);
        let message = read(&with_pickle(blowup)).unwrap_err();
        assert!(message.contains("copies over"), "{message}");
        // A dict of more entries than any state dict has.
        let mut wide = vec![op::PROTO, 2, op::EMPTY_DICT, op::MARK];
        for k in 0..=MAX_ENTRIES as u32 {
            wide.push(op::BININT);
            wide.extend(k.to_le_bytes());
            wide.extend([op::BININT1, 0]);
        }
        wide.extend([op::SETITEMS, op::STOP]);
        let message = read(&with_pickle(wide)).unwrap_err();
        assert!(message.contains("entries"), "{message}");
    }

    /// A million nested tuples (TUPLE1 on TUPLE1…) or nested lists once overflowed the stack
    /// (exit 134); a flat pickle of 15 M `None`s took 4.2 GB. Each is refused once it passes the
    /// bound, with nothing left that recurses deeper than [`MAX_DEPTH`].
    #[test]
    fn deep_or_endless_pickles_are_refused() {
        let mut tuples = vec![op::PROTO, 2, op::EMPTY_TUPLE];
        tuples.extend(std::iter::repeat_n(op::TUPLE1, 1_000_000));
        tuples.push(op::STOP);
        let message = read(&with_pickle(tuples)).unwrap_err();
        assert!(
            message.contains("nests containers over 32 deep"),
            "{message}"
        );

        let mut lists = vec![op::PROTO, 2];
        lists.extend(std::iter::repeat_n(op::EMPTY_LIST, 100_000));
        lists.extend(std::iter::repeat_n(op::APPEND, 99_999));
        lists.push(op::STOP);
        let message = read(&with_pickle(lists)).unwrap_err();
        assert!(
            message.contains("nests containers over 32 deep"),
            "{message}"
        );

        let mut nones = vec![op::PROTO, 2];
        nones.extend(std::iter::repeat_n(op::NONE, 2 * MAX_VALUES));
        nones.push(op::STOP);
        let message = read(&with_pickle(nones)).unwrap_err();
        assert!(message.contains("makes over"), "{message}");
    }

    /// Directory entries that point at one record made its CRC run once per entry (65,534
    /// entries on a 4 MB record: minutes): records may not overlap.
    #[test]
    fn overlapping_records_are_refused() {
        let raw = write(&tensors(), Dtype::F32);
        let end = raw.len() - 22;
        let mut at = u32_at(&raw, end + 16).unwrap() as usize;
        let first_local = u32_at(&raw, at + 42).unwrap();
        let mut patched = raw.clone();
        for index in 0..u16_at(&raw, end + 10).unwrap() {
            let name_len = usize::from(u16_at(&raw, at + 28).unwrap());
            let extra_len = usize::from(u16_at(&raw, at + 30).unwrap());
            if index == 2 {
                // The third entry: same name, sizes and CRC, but the first record's place.
                patched[at + 42..at + 46].copy_from_slice(&first_local.to_le_bytes());
            }
            at += 46 + name_len + extra_len;
        }
        let message = read(&patched).unwrap_err();
        assert!(message.contains("overlap"), "{message}");
    }

    /// Tensors that view one storage again and again once had it expanded per tensor (4,096
    /// views of a 4 MB storage: 16 GB) before the template check: the tensors may hold no more
    /// elements than their storages, and each tensor is offered to `accept` before it is read.
    #[test]
    fn shared_storages_are_not_expanded_twice_and_names_are_checked_first() {
        let values: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let two = vec![
            ("a".to_owned(), vec![12], values.clone()),
            ("b".to_owned(), vec![12], values),
        ];
        let raw = write(&two, Dtype::F32);
        let records = unzip(&raw).unwrap();
        let mut pickle = records[0].1.to_vec();
        // The second tensor's storage key, "1", becomes "0": both view storage 0.
        let key = [op::BINUNICODE, 1, 0, 0, 0, b'1'];
        let at = pickle.windows(6).position(|w| w == key).unwrap();
        pickle[at + 5] = b'0';
        let message = read(&with_pickle_of(&raw, pickle)).unwrap_err();
        assert!(message.contains("overlap"), "{message}");

        let mut offered = Vec::new();
        let refused = read_with(&raw, |name, shape| {
            offered.push((name.to_owned(), shape.to_vec()));
            Err(format!("{name} is not in the template"))
        })
        .unwrap_err();
        assert_eq!(refused, "a is not in the template");
        assert_eq!(offered, vec![("a".to_owned(), vec![12])]);
    }

    /// `raw`'s records with `data.pkl` replaced by `pickle`.
    fn with_pickle_of(raw: &[u8], pickle: Vec<u8>) -> Vec<u8> {
        let mut records: Vec<(String, Vec<u8>)> = unzip(raw)
            .unwrap()
            .into_iter()
            .map(|(name, data)| (name, data.to_vec()))
            .collect();
        records[0].1 = pickle;
        zip(&records)
    }

    #[test]
    fn tensors_outside_their_storage_are_refused() {
        let storage = Storage {
            kind: StorageType::F32,
            key: "0".into(),
            numel: 4,
        };
        let tensor = TensorRef {
            storage,
            offset: 1,
            size: vec![2, 2],
            stride: vec![2, 1],
        };
        let data: Vec<u8> = (0..4).flat_map(|i| (i as f32).to_le_bytes()).collect();
        assert!(tensor.values(&data).unwrap_err().contains("outside"));
        let transposed = TensorRef {
            offset: 0,
            stride: vec![1, 2],
            ..tensor
        };
        assert_eq!(transposed.values(&data).unwrap(), [0.0, 2.0, 1.0, 3.0]);
    }
}
