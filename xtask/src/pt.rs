//! PyTorch's checkpoint format for a state dict of tensors, what `torch.save(model.state_dict(),
//! path)` writes, read and written here: a zip archive of stored (uncompressed) records under one
//! folder, `archive/data.pkl` (the dict as a pickle, protocol 2), one record per tensor's storage
//! (`archive/data/0`, little-endian), `archive/byteorder` and `archive/version`.
//!
//! The pickle written uses only the opcodes and the three globals torch itself writes for such a
//! dict (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`, `torch.FloatStorage` or
//! `HalfStorage`), so `torch.load(path, weights_only=True)` accepts it. The reader interprets the
//! same small set and nothing else: a pickle that names any other global or uses any other
//! opcode is refused by name, never run. Every defect (a truncated or damaged archive, a record's
//! CRC, a storage of the wrong length, a tensor outside its storage) is an error that says which.

use std::collections::BTreeMap;

use half::f16;
use infer::crc32::crc32;

use crate::safetensors::Dtype;

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
    let mut records: Vec<(String, Vec<u8>)> = vec![(
        format!("{ARCHIVE}/data.pkl"),
        pickle_state_dict(tensors, dtype),
    )];
    records.push((format!("{ARCHIVE}/byteorder"), b"little".to_vec()));
    for (key, (_, _, values)) in tensors.iter().enumerate() {
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

// ---- the pickle ----

/// Pickle opcodes used here (protocol 2, plus protocol 4's framing and memo opcodes, which
/// `pickle_protocol=4` writes).
mod op {
    pub const PROTO: u8 = 0x80;
    pub const FRAME: u8 = 0x95;
    pub const STOP: u8 = b'.';
    pub const GLOBAL: u8 = b'c';
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const MEMOIZE: u8 = 0x94;
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
    pub const MARK: u8 = b'(';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const TUPLE: u8 = b't';
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const EMPTY_DICT: u8 = b'}';
    pub const EMPTY_LIST: u8 = b']';
    pub const SETITEM: u8 = b's';
    pub const SETITEMS: u8 = b'u';
    pub const APPEND: u8 = b'a';
    pub const APPENDS: u8 = b'e';
    pub const BINUNICODE: u8 = b'X';
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const LONG1: u8 = 0x8a;
    pub const BINFLOAT: u8 = b'G';
    pub const NONE: u8 = b'N';
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const BINPERSID: u8 = b'Q';
    pub const REDUCE: u8 = b'R';
    pub const BUILD: u8 = b'b';
}

/// The state dict as torch pickles it: an `OrderedDict` of `_rebuild_tensor_v2(storage, 0,
/// size, stride, False, OrderedDict())`, storage `key` being the tensor's index.
fn pickle_state_dict(tensors: &[NamedTensor], dtype: Dtype) -> Vec<u8> {
    let storage = match dtype {
        Dtype::F32 => "FloatStorage",
        Dtype::F16 => "HalfStorage",
    };
    let mut p = vec![op::PROTO, 2];
    let global = |p: &mut Vec<u8>, module: &str, name: &str| {
        p.push(op::GLOBAL);
        p.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    };
    let string = |p: &mut Vec<u8>, s: &str| {
        p.push(op::BINUNICODE);
        p.extend_from_slice(&(s.len() as u32).to_le_bytes());
        p.extend_from_slice(s.as_bytes());
    };
    let int = |p: &mut Vec<u8>, n: usize| {
        p.push(op::BININT);
        p.extend_from_slice(
            &i32::try_from(n)
                .expect("tensor sizes fit i32")
                .to_le_bytes(),
        );
    };
    let ordered_dict = |p: &mut Vec<u8>| {
        global(p, "collections", "OrderedDict");
        p.extend_from_slice(&[op::EMPTY_TUPLE, op::REDUCE]);
    };
    ordered_dict(&mut p);
    p.push(op::MARK);
    for (key, (name, shape, values)) in tensors.iter().enumerate() {
        string(&mut p, name);
        global(&mut p, "torch._utils", "_rebuild_tensor_v2");
        p.push(op::MARK);
        // The persistent id: ('storage', torch.XStorage, key, 'cpu', numel).
        p.push(op::MARK);
        string(&mut p, "storage");
        global(&mut p, "torch", storage);
        string(&mut p, &key.to_string());
        string(&mut p, "cpu");
        int(&mut p, values.len());
        p.extend_from_slice(&[op::TUPLE, op::BINPERSID]);
        int(&mut p, 0); // storage offset
        p.push(op::MARK);
        shape.iter().for_each(|&d| int(&mut p, d));
        p.push(op::TUPLE);
        p.push(op::MARK);
        for (axis, _) in shape.iter().enumerate() {
            int(&mut p, shape[axis + 1..].iter().product());
        }
        p.push(op::TUPLE);
        p.push(op::NEWFALSE); // requires_grad
        ordered_dict(&mut p); // backward hooks
        p.extend_from_slice(&[op::TUPLE, op::REDUCE]);
    }
    p.extend_from_slice(&[op::SETITEMS, op::STOP]);
    p
}

/// The callables a state dict's pickle may name; any other global is refused.
#[derive(Debug, Clone, PartialEq)]
enum Global {
    OrderedDict,
    RebuildTensor,
    Storage(StorageType),
}

/// Element types of storages read.
#[derive(Debug, Clone, Copy, PartialEq)]
enum StorageType {
    F32,
    F16,
    BF16,
    F64,
}

impl StorageType {
    fn size(self) -> usize {
        match self {
            StorageType::F16 | StorageType::BF16 => 2,
            StorageType::F32 => 4,
            StorageType::F64 => 8,
        }
    }

    fn value(self, bytes: &[u8]) -> f32 {
        match self {
            StorageType::F32 => f32::from_le_bytes(bytes.try_into().expect("4 bytes")),
            StorageType::F16 => f16::from_le_bytes(bytes.try_into().expect("2 bytes")).to_f32(),
            StorageType::BF16 => {
                f32::from_bits(u32::from(u16::from_le_bytes(bytes.try_into().expect("2"))) << 16)
            }
            StorageType::F64 => f64::from_le_bytes(bytes.try_into().expect("8 bytes")) as f32,
        }
    }
}

impl Global {
    fn named(module: &str, name: &str) -> Result<Self, String> {
        Ok(match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensor,
            ("torch", "FloatStorage") => Global::Storage(StorageType::F32),
            ("torch", "HalfStorage") => Global::Storage(StorageType::F16),
            ("torch", "BFloat16Storage") => Global::Storage(StorageType::BF16),
            ("torch", "DoubleStorage") => Global::Storage(StorageType::F64),
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
struct Storage {
    kind: StorageType,
    key: String,
    numel: usize,
}

/// A tensor: a view of `size` with `stride` from `offset` into its storage.
#[derive(Debug, Clone, PartialEq)]
struct TensorRef {
    storage: Storage,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

impl TensorRef {
    /// Its elements, read from its storage's record `data`, in row-major order.
    fn values(&self, data: &[u8]) -> Result<Vec<f32>, String> {
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

/// What the unpickler's stack holds.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Mark,
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(Global),
    Storage(Box<Storage>),
    Tensor(Box<TensorRef>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Mark => "a mark",
            Value::None => "None",
            Value::Bool(_) => "a bool",
            Value::Int(_) => "an int",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Tuple(_) => "a tuple",
            Value::List(_) => "a list",
            Value::Dict(_) => "a dict",
            Value::Global(_) => "a class",
            Value::Storage(_) => "a storage",
            Value::Tensor(_) => "a tensor",
        }
    }

    /// How deep its containers nest (1 for a value that holds none): at most [`MAX_DEPTH`]
    /// for every value the unpickler makes, so this recursion is bounded too.
    fn depth(&self) -> usize {
        1 + match self {
            Value::Tuple(items) | Value::List(items) => {
                items.iter().map(Value::depth).max().unwrap_or(0)
            }
            Value::Dict(entries) => entries
                .iter()
                .map(|(k, v)| k.depth().max(v.depth()))
                .max()
                .unwrap_or(0),
            _ => 0,
        }
    }

    /// How many values it holds, itself included.
    fn count(&self) -> usize {
        1 + match self {
            Value::Tuple(items) | Value::List(items) => items.iter().map(Value::count).sum(),
            Value::Dict(entries) => entries.iter().map(|(k, v)| k.count() + v.count()).sum(),
            _ => 0,
        }
    }

    fn usize(&self, what: &str) -> Result<usize, String> {
        match self {
            Value::Int(n) => usize::try_from(*n).map_err(|_| format!("{what} {n} is negative")),
            other => Err(format!("{what} is {}, not an int", other.kind())),
        }
    }

    fn usizes(&self, what: &str) -> Result<Vec<usize>, String> {
        match self {
            Value::Tuple(items) => items.iter().map(|v| v.usize(what)).collect(),
            other => Err(format!("{what} is {}, not a tuple", other.kind())),
        }
    }
}

/// A pickle machine for the opcodes a state dict of tensors needs. The memo keeps copies, not
/// shared references: a container memoised before it is filled reads back as it was then,
/// which torch's own pickles never rely on (they fetch only globals, strings and tuples).
#[derive(Default)]
struct Unpickler {
    stack: Vec<Value>,
    memo: BTreeMap<u32, Value>,
    /// Values copied out of the memo so far.
    copied: usize,
    /// Values pushed so far.
    pushed: usize,
}

/// A reader over the pickle's bytes; running out is an error.
struct Bytes<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.data.len());
        let end = end.ok_or("the pickle ends in the middle of an opcode")?;
        let bytes = &self.data[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.at..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("the pickle ends in the middle of a global's name")?;
        let line = String::from_utf8(rest[..end].to_vec()).map_err(|_| "a name is not UTF-8")?;
        self.at += end + 1;
        Ok(line)
    }

    fn string(&mut self, len: usize) -> Result<String, String> {
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| "a string is not UTF-8".into())
    }
}

/// Refuses `items` as the contents of a container: one of them nests [`MAX_DEPTH`] deep already.
fn nest(items: &[Value]) -> Result<(), String> {
    match items.iter().map(Value::depth).max() {
        Some(depth) if depth >= MAX_DEPTH => Err(format!(
            "the pickle nests containers over {MAX_DEPTH} deep; a state dict needs 4"
        )),
        _ => Ok(()),
    }
}

impl Unpickler {
    /// Pushes a value, counting it against [`MAX_VALUES`].
    fn push(&mut self, value: Value) -> Result<(), String> {
        self.pushed += 1;
        if self.pushed > MAX_VALUES {
            return Err(format!(
                "the pickle makes over {MAX_VALUES} values; a state dict needs a few hundred"
            ));
        }
        self.stack.push(value);
        Ok(())
    }

    /// Pushes a container of `items`, checking how deep it nests.
    fn push_container(
        &mut self,
        make: fn(Vec<Value>) -> Value,
        items: Vec<Value>,
    ) -> Result<(), String> {
        nest(&items)?;
        self.push(make(items))
    }

    fn pop(&mut self) -> Result<Value, String> {
        match self.stack.pop() {
            Some(Value::Mark) | None => Err("the pickle pops an empty stack".into()),
            Some(value) => Ok(value),
        }
    }

    fn top(&mut self) -> Result<&mut Value, String> {
        self.stack
            .last_mut()
            .ok_or_else(|| "the pickle reads an empty stack".to_owned())
    }

    /// The values above the topmost mark, which is removed.
    fn pop_to_mark(&mut self) -> Result<Vec<Value>, String> {
        let mark = self
            .stack
            .iter()
            .rposition(|v| *v == Value::Mark)
            .ok_or("the pickle closes a mark it never opened")?;
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        Ok(items)
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<(), String> {
        nest(&items)?;
        if !items.len().is_multiple_of(2) {
            return Err("a dict's items do not come in pairs".into());
        }
        let Value::Dict(entries) = self.top()? else {
            return Err("the pickle sets items on something that is not a dict".into());
        };
        let mut items = items.into_iter();
        while let (Some(key), Some(value)) = (items.next(), items.next()) {
            if let Some(entry) = entries.iter_mut().find(|(k, _)| *k == key) {
                entry.1 = value;
            } else if entries.len() < MAX_ENTRIES {
                entries.push((key, value));
            } else {
                return Err(format!("a dict of over {MAX_ENTRIES} entries"));
            }
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> Result<(), String> {
        nest(&items)?;
        match self.top()? {
            Value::List(list) => {
                list.extend(items);
                Ok(())
            }
            other => Err(format!("the pickle appends to {}", other.kind())),
        }
    }

    fn memo_get(&mut self, index: u32) -> Result<Value, String> {
        let value = self
            .memo
            .get(&index)
            .ok_or_else(|| format!("the pickle reads memo {index}, never stored"))?;
        self.copied += value.count();
        if self.copied > MAX_COPIED {
            return Err(format!(
                "the pickle copies over {MAX_COPIED} values out of its memo"
            ));
        }
        Ok(value.clone())
    }

    fn call(callable: Value, args: Value) -> Result<Value, String> {
        let Value::Tuple(args) = args else {
            return Err(format!(
                "a call's arguments are {}, not a tuple",
                args.kind()
            ));
        };
        match callable {
            Value::Global(Global::OrderedDict) if args.is_empty() => Ok(Value::Dict(Vec::new())),
            Value::Global(Global::RebuildTensor) if (6..=7).contains(&args.len()) => {
                let Value::Storage(storage) = &args[0] else {
                    return Err(format!("a tensor's storage is {}", args[0].kind()));
                };
                let size = args[2].usizes("a tensor's size")?;
                let stride = args[3].usizes("a tensor's stride")?;
                if size.len() != stride.len() {
                    return Err(format!(
                        "size {size:?} and stride {stride:?} differ in length"
                    ));
                }
                Ok(Value::Tensor(Box::new(TensorRef {
                    storage: (**storage).clone(),
                    offset: args[1].usize("a tensor's storage offset")?,
                    size,
                    stride,
                })))
            }
            Value::Global(global) => Err(format!(
                "the pickle calls {global:?} with {} arguments",
                args.len()
            )),
            other => Err(format!("the pickle calls {}", other.kind())),
        }
    }

    fn run(mut self, pickle: &[u8]) -> Result<Value, String> {
        let mut bytes = Bytes {
            data: pickle,
            at: 0,
        };
        loop {
            let at = bytes.at;
            let code = bytes.u8().map_err(|_| "the pickle ends without STOP")?;
            match code {
                op::PROTO => {
                    bytes.u8()?;
                }
                op::FRAME => {
                    bytes.take(8)?;
                }
                op::STOP => return self.pop(),
                op::GLOBAL => {
                    let (module, name) = (bytes.line()?, bytes.line()?);
                    self.push(Value::Global(Global::named(&module, &name)?))?;
                }
                op::STACK_GLOBAL => {
                    let (name, module) = (self.pop()?, self.pop()?);
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return Err("STACK_GLOBAL without two strings".into());
                    };
                    self.push(Value::Global(Global::named(&module, &name)?))?;
                }
                op::BINPUT | op::LONG_BINPUT | op::MEMOIZE => {
                    let index = match code {
                        op::BINPUT => u32::from(bytes.u8()?),
                        op::LONG_BINPUT => bytes.u32()?,
                        _ => self.memo.len() as u32,
                    };
                    let value = self.top()?.clone();
                    self.copied += value.count();
                    if self.copied > MAX_COPIED {
                        return Err(format!("the pickle copies over {MAX_COPIED} values"));
                    }
                    self.memo.insert(index, value);
                }
                op::BINGET => {
                    let value = self.memo_get(u32::from(bytes.u8()?))?;
                    self.push(value)?;
                }
                op::LONG_BINGET => {
                    let value = self.memo_get(bytes.u32()?)?;
                    self.push(value)?;
                }
                op::MARK => self.push(Value::Mark)?,
                op::EMPTY_TUPLE => self.push(Value::Tuple(Vec::new()))?,
                op::TUPLE => {
                    let items = self.pop_to_mark()?;
                    self.push_container(Value::Tuple, items)?;
                }
                op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                    let n = usize::from(code - op::TUPLE1 + 1);
                    let mut items = (0..n).map(|_| self.pop()).collect::<Result<Vec<_>, _>>()?;
                    items.reverse();
                    self.push_container(Value::Tuple, items)?;
                }
                op::EMPTY_DICT => self.push(Value::Dict(Vec::new()))?,
                op::EMPTY_LIST => self.push(Value::List(Vec::new()))?,
                op::SETITEM => {
                    let (value, key) = (self.pop()?, self.pop()?);
                    self.set_items(vec![key, value])?;
                }
                op::SETITEMS => {
                    let items = self.pop_to_mark()?;
                    self.set_items(items)?;
                }
                op::APPEND => {
                    let item = self.pop()?;
                    self.append(vec![item])?;
                }
                op::APPENDS => {
                    let items = self.pop_to_mark()?;
                    self.append(items)?;
                }
                op::BINUNICODE => {
                    let len = bytes.u32()? as usize;
                    let s = bytes.string(len)?;
                    self.push(Value::Str(s))?;
                }
                op::SHORT_BINUNICODE => {
                    let len = usize::from(bytes.u8()?);
                    let s = bytes.string(len)?;
                    self.push(Value::Str(s))?;
                }
                op::BININT => {
                    let n = i32::from_le_bytes(bytes.take(4)?.try_into().expect("4"));
                    self.push(Value::Int(i64::from(n)))?;
                }
                op::BININT1 => {
                    let n = bytes.u8()?;
                    self.push(Value::Int(i64::from(n)))?;
                }
                op::BININT2 => {
                    let n = bytes.u16()?;
                    self.push(Value::Int(i64::from(n)))?;
                }
                op::LONG1 => {
                    let len = usize::from(bytes.u8()?);
                    let digits = bytes.take(len)?;
                    if len > 8 {
                        return Err(format!("an integer of {len} bytes"));
                    }
                    let mut buffer = [0u8; 8];
                    buffer[..len].copy_from_slice(digits);
                    if len > 0 && digits[len - 1] & 0x80 != 0 {
                        buffer[len..].fill(0xFF);
                    }
                    self.push(Value::Int(i64::from_le_bytes(buffer)))?;
                }
                op::BINFLOAT => {
                    let v = f64::from_be_bytes(bytes.take(8)?.try_into().expect("8"));
                    self.push(Value::Float(v))?;
                }
                op::NONE => self.push(Value::None)?,
                op::NEWTRUE => self.push(Value::Bool(true))?,
                op::NEWFALSE => self.push(Value::Bool(false))?,
                op::BINPERSID => {
                    let id = self.pop()?;
                    let storage = match id {
                        Value::Tuple(items) => match items.as_slice() {
                            [
                                Value::Str(tag),
                                Value::Global(Global::Storage(kind)),
                                Value::Str(key),
                                Value::Str(_location),
                                numel,
                            ] if tag == "storage" => Storage {
                                kind: *kind,
                                key: key.clone(),
                                numel: numel.usize("a storage's size")?,
                            },
                            _ => return Err("a persistent id that is not a storage".into()),
                        },
                        other => {
                            return Err(format!("a persistent id that is {}", other.kind()));
                        }
                    };
                    if storage.key.contains(['/', '\\']) || storage.key.contains("..") {
                        return Err(format!("a storage key {:?} that is a path", storage.key));
                    }
                    self.push(Value::Storage(Box::new(storage)))?;
                }
                op::REDUCE => {
                    let (args, callable) = (self.pop()?, self.pop()?);
                    let made = Self::call(callable, args)?;
                    self.push(made)?;
                }
                op::BUILD => {
                    // An OrderedDict's attributes (a module's `_metadata`): not part of the
                    // tensors, so dropped.
                    self.pop()?;
                    match self.top()? {
                        Value::Dict(_) => {}
                        other => return Err(format!("the pickle builds {}", other.kind())),
                    }
                }
                other => {
                    return Err(format!(
                        "opcode 0x{other:02x} at byte {at} of the pickle is not one a state \
                         dict of tensors needs: refused"
                    ));
                }
            }
        }
    }
}

// ---- the zip archive ----

const LOCAL: u32 = 0x0403_4b50;
const CENTRAL: u32 = 0x0201_4b50;
const END: u32 = 0x0605_4b50;
/// 1980-01-01 as a DOS date: (year − 1980) << 9 | month << 5 | day.
const DOS_1980_01_01: u16 = 1 << 5 | 1;

fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
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

#[cfg(test)]
mod tests {
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
        let raw = include_bytes!("../tests/data/torch_saved.pt");
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
