//! The reader of a state dict's pickle: the opcodes and globals such a pickle uses, each value
//! bounded (nesting depth, memo copies, values made); anything else is refused by name.

use super::*;

/// What the unpickler's stack holds.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::pt) enum Value {
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
    pub(in crate::pt) fn kind(&self) -> &'static str {
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
pub(in crate::pt) struct Unpickler {
    stack: Vec<Value>,
    memo: BTreeMap<u32, Value>,
    /// Values copied out of the memo so far.
    copied: usize,
    /// Values pushed so far.
    pushed: usize,
}

/// A reader over the pickle's bytes; running out is an error.
pub(in crate::pt) struct Bytes<'a> {
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
pub(in crate::pt) fn nest(items: &[Value]) -> Result<(), String> {
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
                Self::tensor(&args, None)
            }
            Value::Global(Global::RebuildTensorV3) if (7..=8).contains(&args.len()) => {
                let Value::Global(Global::Dtype(dtype)) = &args[6] else {
                    return Err(format!("a v3 tensor's dtype is {}", args[6].kind()));
                };
                Self::tensor(&args, Some(*dtype))
            }
            Value::Global(global) => Err(format!(
                "the pickle calls {global:?} with {} arguments",
                args.len()
            )),
            other => Err(format!("the pickle calls {}", other.kind())),
        }
    }

    /// A tensor from a rebuild's arguments (storage, offset, size, stride, ...); `dtype` types an
    /// untyped storage (v3), whose element count is then its bytes over the dtype's size.
    fn tensor(args: &[Value], dtype: Option<StorageType>) -> Result<Value, String> {
        let Value::Storage(storage) = &args[0] else {
            return Err(format!("a tensor's storage is {}", args[0].kind()));
        };
        let mut storage = (**storage).clone();
        match (storage.kind, dtype) {
            (StorageType::Bytes, Some(dtype)) => {
                if storage.numel % dtype.size() != 0 {
                    return Err(format!(
                        "an untyped storage of {} bytes holds no whole number of {dtype:?}",
                        storage.numel
                    ));
                }
                storage.numel /= dtype.size();
                storage.kind = dtype;
            }
            (StorageType::Bytes, None) => {
                return Err("an untyped storage without a dtype (_rebuild_tensor_v2)".into());
            }
            (kind, Some(dtype)) if kind != dtype => {
                return Err(format!("a {kind:?} storage rebuilt as {dtype:?}"));
            }
            _ => {}
        }
        let size = args[2].usizes("a tensor's size")?;
        let stride = args[3].usizes("a tensor's stride")?;
        if size.len() != stride.len() {
            return Err(format!(
                "size {size:?} and stride {stride:?} differ in length"
            ));
        }
        Ok(Value::Tensor(Box::new(TensorRef {
            storage,
            offset: args[1].usize("a tensor's storage offset")?,
            size,
            stride,
        })))
    }

    pub(in crate::pt) fn run(mut self, pickle: &[u8]) -> Result<Value, String> {
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
