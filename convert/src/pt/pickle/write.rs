//! The pickle torch writes for a state dict, and nothing more.

use super::op;
use crate::pt::NamedTensor;
use crate::safetensors::Dtype;

/// The state dict as torch pickles it: an `OrderedDict` of `_rebuild_tensor_v2(storage, 0,
/// size, stride, False, OrderedDict())`, storage `key` being the tensor's index; for f8,
/// `_rebuild_tensor_v3(untyped storage, 0, size, stride, False, OrderedDict(), dtype)`.
pub(in crate::pt) fn pickle_state_dict(tensors: &[(&NamedTensor, Dtype)]) -> Vec<u8> {
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
    for (key, ((name, shape, values), dtype)) in tensors.iter().enumerate() {
        // The storage's class, and the dtype a v3 rebuild names.
        let (rebuild, (module, storage), dtype_name) = match dtype {
            Dtype::F32 => ("_rebuild_tensor_v2", ("torch", "FloatStorage"), None),
            Dtype::F16 => ("_rebuild_tensor_v2", ("torch", "HalfStorage"), None),
            Dtype::F8E4M3 => (
                "_rebuild_tensor_v3",
                ("torch.storage", "UntypedStorage"),
                Some("float8_e4m3fn"),
            ),
        };
        string(&mut p, name);
        global(&mut p, "torch._utils", rebuild);
        p.push(op::MARK);
        // The persistent id: ('storage', torch.XStorage, key, 'cpu', numel), numel in bytes
        // for an untyped storage (one a value in f8).
        p.push(op::MARK);
        string(&mut p, "storage");
        global(&mut p, module, storage);
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
        if let Some(dtype) = dtype_name {
            global(&mut p, "torch", dtype);
        }
        p.extend_from_slice(&[op::TUPLE, op::REDUCE]);
    }
    p.extend_from_slice(&[op::SETITEMS, op::STOP]);
    p
}
