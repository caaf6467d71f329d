//! Reads PyTorch `state_dict` files without Python: the zip format (torch ≥ 1.6) and the legacy
//! pre-1.6 format that Oscar's released `pytorch_model.bin` files use (candle reads only the
//! former). Both pickle a dict of `_rebuild_tensor_v2(storage, offset, size, stride, …)` whose
//! storages are persistent ids; they differ in where the storage bytes live:
//! - zip: `<archive>/data.pkl` holds the dict; storage `k` is the entry `<archive>/data/k`.
//! - legacy: five pickles in a row — magic number, protocol 1001, sys_info, the dict, the list
//!   of storage keys — followed, per key in that order, by a u64 element count and the raw bytes.

use crate::error::{Error, Result};
use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// The legacy magic number 0x1950a86a20f9469cfc6c as pickled (`PROTO 2, LONG1 10 bytes, STOP`).
const LEGACY_MAGIC: [u8; 15] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e,
];

/// Which on-disk layout a torch file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorchFormat {
    Zip,
    Legacy,
}

/// Sniffs the first bytes: `Some(format)` for a torch file, `None` otherwise.
pub fn sniff(path: &Path) -> Result<Option<TorchFormat>> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = [0u8; 15];
    let n = read_up_to(&mut f, &mut head).map_err(|e| Error::io(path, e))?;
    Ok(if n >= 4 && head[..4] == *b"PK\x03\x04" {
        Some(TorchFormat::Zip)
    } else if n == 15 && head == LEGACY_MAGIC {
        Some(TorchFormat::Legacy)
    } else {
        None
    })
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Where one tensor's data lives, as the pickle describes it.
struct TensorRef {
    name: String,
    storage_key: String,
    dtype: DType,
    /// Element offset inside the storage (legacy views add their own offset).
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

/// Reads every tensor of a torch checkpoint (either format) as `(key, tensor)` on the CPU.
/// Non-tensor entries (`_metadata`, step counters) are skipped; a dict wrapping the weights
/// under `state_dict` or `model` is unwrapped.
pub fn read_torch_file(path: &Path) -> Result<Vec<(String, Tensor)>> {
    match sniff(path)? {
        Some(TorchFormat::Zip) => read_zip(path),
        Some(TorchFormat::Legacy) => read_legacy(path),
        None => Err(Error::bad_file(path, "not a PyTorch checkpoint: neither the zip format (torch >= 1.6) nor the legacy pickle format")),
    }
}

/// Reads a `torch.save`d object that holds no tensors (a dict of captions, a list of keys) as
/// JSON: dict keys become strings, tuples become lists.
pub fn read_torch_object(path: &Path) -> Result<serde_json::Value> {
    let obj = match sniff(path)? {
        Some(TorchFormat::Zip) => {
            let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| {
                Error::bad_file(path, format!("not a readable zip (truncated?): {e}"))
            })?;
            let pkl = zip
                .file_names()
                .filter_map(|n| n.ok())
                .find(|n| n.ends_with("data.pkl"))
                .map(|s| s.to_string())
                .ok_or_else(|| Error::bad_file(path, "zip archive has no data.pkl"))?;
            let entry = zip
                .by_name(&pkl)
                .map_err(|e| Error::bad_file(path, format!("{pkl}: {e}")))?;
            // Bound before `zip` is dropped: the entry borrows it.
            #[allow(clippy::let_and_return)]
            let obj = unpickle(&mut BufReader::new(entry), path, "object")?;
            obj
        }
        Some(TorchFormat::Legacy) => {
            let mut r = BufReader::new(std::fs::File::open(path).map_err(|e| Error::io(path, e))?);
            let mut magic = [0u8; 15];
            r.read_exact(&mut magic).map_err(|e| Error::io(path, e))?;
            unpickle(&mut r, path, "protocol version")?;
            unpickle(&mut r, path, "sys_info")?;
            unpickle(&mut r, path, "object")?
        }
        None => {
            return Err(Error::bad_file(
                path,
                "not a torch.save file (neither zip nor legacy format)",
            ))
        }
    };
    object_to_json(obj).map_err(|what| Error::bad_file(path, what))
}

/// Plain pickled values as JSON; tensors and other objects are refused.
pub fn object_to_json(o: Object) -> std::result::Result<serde_json::Value, String> {
    use serde_json::Value;
    Ok(match o {
        Object::Unicode(s) => Value::String(s),
        Object::Int(i) => Value::from(i),
        Object::Long(i) => Value::from(i),
        Object::Float(f) => Value::from(f),
        Object::Bool(b) => Value::Bool(b),
        Object::None => Value::Null,
        Object::List(v) | Object::Tuple(v) => Value::Array(
            v.into_iter()
                .map(object_to_json)
                .collect::<std::result::Result<_, _>>()?,
        ),
        Object::Dict(kv) => {
            let mut m = serde_json::Map::new();
            for (k, v) in kv {
                let key = match k {
                    Object::Unicode(s) => s,
                    Object::Int(i) => i.to_string(),
                    Object::Long(i) => i.to_string(),
                    other => {
                        return Err(format!(
                            "a dict key is {other:?}, expected a string or an integer"
                        ))
                    }
                };
                m.insert(key, object_to_json(v)?);
            }
            Value::Object(m)
        }
        other => {
            return Err(format!(
                "holds {}, expected plain values (strings, numbers, lists, dicts)",
                match other {
                    Object::Reduce { .. } => "a tensor or another object",
                    _ => "an unsupported value",
                }
            ))
        }
    })
}

/// Runs candle's unpickler, turning any internal panic on hostile bytes into an error.
fn unpickle<R: BufRead>(r: &mut R, path: &Path, what: &str) -> Result<Object> {
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut stack = Stack::empty();
        stack.read_loop(r)?;
        stack.finalize()
    }));
    match res {
        Ok(Ok(obj)) => Ok(obj),
        Ok(Err(e)) => Err(Error::bad_file(
            path,
            format!("cannot read the {what} pickle (truncated or corrupt file?): {e}"),
        )),
        Err(_) => Err(Error::bad_file(
            path,
            format!("the {what} pickle is malformed"),
        )),
    }
}

fn read_zip(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| {
        Error::bad_file(
            path,
            format!("not a readable zip checkpoint (truncated?): {e}"),
        )
    })?;
    let pkl = zip
        .file_names()
        .filter_map(|n| n.ok())
        .find(|n| n.ends_with("data.pkl"))
        .map(|s| s.to_string())
        .ok_or_else(|| {
            Error::bad_file(path, "zip archive has no data.pkl: not a torch.save file")
        })?;
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    let obj = {
        let entry = zip
            .by_name(&pkl)
            .map_err(|e| Error::bad_file(path, format!("{pkl}: {e}")))?;
        unpickle(&mut BufReader::new(entry), path, "state_dict")?
    };
    let refs = collect_refs(obj, path, false)?;
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut out = Vec::with_capacity(refs.len());
    for r in refs {
        if !storages.contains_key(&r.storage_key) {
            let name = format!("{prefix}data/{}", r.storage_key);
            let mut entry = zip.by_name(&name).map_err(|e| {
                Error::bad_file(path, format!("storage {name} of `{}`: {e}", r.name))
            })?;
            let mut bytes = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut bytes).map_err(|e| {
                Error::bad_file(
                    path,
                    format!(
                        "storage {name} of `{}` is unreadable (truncated?): {e}",
                        r.name
                    ),
                )
            })?;
            storages.insert(r.storage_key.clone(), bytes);
        }
        let t = materialize(&r, &storages[&r.storage_key], path)?;
        out.push((r.name, t));
    }
    Ok(out)
}

fn read_legacy(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut r = BufReader::new(file);
    let mut magic = [0u8; 15];
    r.read_exact(&mut magic).map_err(|e| Error::io(path, e))?;
    let proto = unpickle(&mut r, path, "protocol version")?;
    if proto != Object::Int(1001) {
        return Err(Error::bad_file(
            path,
            format!("legacy protocol version is {proto:?}, expected 1001"),
        ));
    }
    let sys_info = unpickle(&mut r, path, "sys_info")?;
    if let Object::Dict(entries) = &sys_info {
        let le = entries
            .iter()
            .find(|(k, _)| *k == Object::Unicode("little_endian".into()))
            .map(|(_, v)| v);
        if le == Some(&Object::Bool(false)) {
            return Err(Error::bad_file(path, "checkpoint was written on a big-endian machine; only little-endian files are supported"));
        }
    }
    let obj = unpickle(&mut r, path, "state_dict")?;
    let refs = collect_refs(obj, path, true)?;
    let keys = match unpickle(&mut r, path, "storage key list")? {
        Object::List(k) => k,
        other => {
            return Err(Error::bad_file(
                path,
                format!("expected the list of storage keys after the state_dict, got {other:?}"),
            ))
        }
    };
    // Storage element sizes come from the tensors that use them.
    let elem: HashMap<&str, usize> = refs
        .iter()
        .map(|t| (t.storage_key.as_str(), t.dtype.size_in_bytes()))
        .collect();
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    for k in keys {
        let Object::Unicode(key) = k else {
            return Err(Error::bad_file(path, "storage key list holds a non-string"));
        };
        let mut n = [0u8; 8];
        r.read_exact(&mut n).map_err(|_| {
            Error::bad_file(
                path,
                format!("file ends before storage {key} (truncated checkpoint)"),
            )
        })?;
        let numel = u64::from_le_bytes(n);
        let Some(&es) = elem.get(key.as_str()) else {
            return Err(Error::bad_file(
                path,
                format!("storage {key} is not used by any tensor; cannot size it"),
            ));
        };
        let nbytes = numel.checked_mul(es as u64).filter(|b| *b <= file_len).ok_or_else(|| {
            Error::bad_file(path, format!("storage {key} claims {numel} elements, more than the file holds (truncated or corrupt)"))
        })?;
        let mut bytes = vec![0u8; nbytes as usize];
        r.read_exact(&mut bytes).map_err(|_| {
            Error::bad_file(
                path,
                format!(
                    "storage {key} is cut short: expected {nbytes} bytes (truncated checkpoint)"
                ),
            )
        })?;
        storages.insert(key, bytes);
    }
    refs.into_iter()
        .map(|t| {
            let bytes = storages.get(&t.storage_key).ok_or_else(|| {
                Error::bad_file(
                    path,
                    format!(
                        "tensor `{}` refers to storage {} that the file does not contain",
                        t.name, t.storage_key
                    ),
                )
            })?;
            Ok((t.name.clone(), materialize(&t, bytes, path)?))
        })
        .collect()
}

/// Finds the state dict in the unpickled object and the tensor reference of each entry.
fn collect_refs(obj: Object, path: &Path, legacy: bool) -> Result<Vec<TensorRef>> {
    let Object::Dict(mut entries) = obj else {
        return Err(Error::bad_file(
            path,
            "the pickled object is not a dict of tensors (a state_dict was expected)",
        ));
    };
    // Training checkpoints wrap the weights: {"model": {...}, "optimizer": ...} or {"state_dict": ...}.
    let wrapped = entries.iter().position(|(k, v)| {
        matches!(k, Object::Unicode(s) if s == "state_dict" || s == "model")
            && matches!(v, Object::Dict(_))
    });
    if let Some(i) = wrapped {
        if let (_, Object::Dict(inner)) = entries.swap_remove(i) {
            entries = inner;
        }
    }
    let mut refs = Vec::new();
    for (k, v) in entries {
        // State dicts have string keys; feature dicts (`{image_id: tensor}`) may have int keys.
        let name = match k {
            Object::Unicode(s) => s,
            Object::Int(i) => i.to_string(),
            Object::Long(i) => i.to_string(),
            _ => continue,
        };
        if let Some(r) = tensor_ref(&name, v, path, legacy)? {
            refs.push(r);
        }
    }
    if refs.is_empty() {
        return Err(Error::bad_file(path, "the checkpoint holds no tensors"));
    }
    Ok(refs)
}

fn class_of(o: &Object) -> Option<(&str, &str)> {
    match o {
        Object::Class {
            module_name,
            class_name,
        } => Some((module_name.as_str(), class_name.as_str())),
        _ => None,
    }
}

fn as_usize(o: &Object) -> Option<usize> {
    match o {
        Object::Int(i) if *i >= 0 => Some(*i as usize),
        Object::Long(i) if *i >= 0 => Some(*i as usize),
        _ => None,
    }
}

fn usize_tuple(o: &Object) -> Option<Vec<usize>> {
    match o {
        Object::Tuple(v) | Object::List(v) => v.iter().map(as_usize).collect(),
        _ => None,
    }
}

/// `Some` for a `_rebuild_tensor_v2` (possibly inside `_rebuild_parameter`), `None` for other values.
fn tensor_ref(name: &str, v: Object, path: &Path, legacy: bool) -> Result<Option<TensorRef>> {
    let Object::Reduce { callable, args } = v else {
        return Ok(None);
    };
    let (callable, args) = match class_of(&callable) {
        Some(("torch._utils", "_rebuild_parameter")) => match *args {
            Object::Tuple(mut a) if !a.is_empty() => match a.swap_remove(0) {
                Object::Reduce { callable, args } => (callable, args),
                _ => return Ok(None),
            },
            _ => return Ok(None),
        },
        _ => (callable, args),
    };
    if class_of(&callable) != Some(("torch._utils", "_rebuild_tensor_v2")) {
        return Ok(None);
    }
    let bad = |what: &str| Error::bad_file(path, format!("tensor `{name}`: {what}"));
    let Object::Tuple(a) = *args else {
        return Err(bad("malformed _rebuild_tensor_v2 arguments"));
    };
    if a.len() < 4 {
        return Err(bad("malformed _rebuild_tensor_v2 arguments"));
    }
    let Object::PersistentLoad(pid) = &a[0] else {
        return Err(bad("storage is not a persistent id"));
    };
    let Object::Tuple(pid) = pid.as_ref() else {
        return Err(bad("storage id is not a tuple"));
    };
    // zip: ("storage", type, key, location, numel); legacy adds view_metadata.
    if pid.len() < 5 || pid[0] != Object::Unicode("storage".into()) {
        return Err(bad(
            "storage id is not ('storage', type, key, location, numel)",
        ));
    }
    let storage_type = class_of(&pid[1])
        .map(|(_, c)| c)
        .ok_or_else(|| bad("storage type is not a class"))?;
    let dtype = match storage_type {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "ByteStorage" | "BoolStorage" => DType::U8,
        other => return Err(bad(&format!("unsupported storage type {other}"))),
    };
    let Object::Unicode(key) = &pid[2] else {
        return Err(bad("storage key is not a string"));
    };
    let mut offset = as_usize(&a[1]).ok_or_else(|| bad("storage offset is not an integer"))?;
    if legacy && pid.len() >= 6 {
        if let Object::Tuple(view) = &pid[5] {
            // (view_key, offset, view_size): the view shares the root storage's bytes.
            if let Some(o) = view.get(1).and_then(as_usize) {
                offset += o;
            }
        }
    }
    let storage_key = key.clone();
    let size = usize_tuple(&a[2]).ok_or_else(|| bad("size is not a tuple of integers"))?;
    let stride = usize_tuple(&a[3]).ok_or_else(|| bad("stride is not a tuple of integers"))?;
    if size.len() != stride.len() {
        return Err(bad("size and stride differ in rank"));
    }
    Ok(Some(TensorRef {
        name: name.to_string(),
        storage_key,
        dtype,
        offset,
        size,
        stride,
    }))
}

/// Copies a (possibly strided) view out of its storage bytes into a contiguous tensor.
fn materialize(t: &TensorRef, storage: &[u8], path: &Path) -> Result<Tensor> {
    let es = t.dtype.size_in_bytes();
    let numel: usize = t.size.iter().product();
    let max_index = t.offset
        + t.size
            .iter()
            .zip(&t.stride)
            .map(|(s, st)| s.saturating_sub(1) * st)
            .sum::<usize>();
    if numel > 0 && (max_index + 1) * es > storage.len() {
        return Err(Error::bad_file(
            path,
            format!("tensor `{}` {:?} reaches element {max_index} of a storage of {} elements (truncated or corrupt)", t.name, t.size, storage.len() / es),
        ));
    }
    let contiguous = {
        let mut expect = 1;
        let mut ok = true;
        for (s, st) in t.size.iter().zip(&t.stride).rev() {
            if *s > 1 && *st != expect {
                ok = false;
            }
            expect *= s;
        }
        ok
    };
    let bytes: Vec<u8> = if contiguous {
        storage[t.offset * es..(t.offset + numel) * es].to_vec()
    } else {
        let mut out = Vec::with_capacity(numel * es);
        let mut idx = vec![0usize; t.size.len()];
        for _ in 0..numel {
            let e = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
            out.extend_from_slice(&storage[e * es..(e + 1) * es]);
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < t.size[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        out
    };
    Tensor::from_raw_buffer(&bytes, t.dtype, &t.size, &Device::Cpu).map_err(Error::from)
}
