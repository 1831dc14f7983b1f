//! GGUF files (llama.cpp's single-file checkpoints), versions 2 and 3: the header, typed metadata,
//! tensor infos and the memory-mapped tensor data.
//!
//! Layout (little-endian throughout): magic `GGUF`, u32 version, u64 tensor count, u64 metadata
//! count; then each metadata entry (string key, u32 value type, value); then each tensor info
//! (string name, u32 dimension count, u64 dims listed fastest-first, u32 ggml type, u64 offset
//! into the data section); then padding to `general.alignment` (default 32) and the data section.
//! Strings are a u64 byte length and UTF-8 bytes; arrays are a u32 element type, a u64 length and
//! the elements.
//!
//! The file is untrusted input: every count is checked against the bytes that remain before
//! anything is allocated for it, every tensor's data against the file's end, and every problem
//! becomes one [`Error::BadFile`] line naming the file and what is wrong, never a panic.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::quant::ggml::{self, GgmlType};
use crate::{Error, Result};

pub const MAGIC: &[u8; 4] = b"GGUF";
pub const DEFAULT_ALIGNMENT: usize = 32;
/// ggml tensors have at most four dimensions.
pub const MAX_DIMS: usize = 4;
/// Arrays of arrays are legal GGUF but unused by llama.cpp; deeper nesting is refused so a
/// hostile file cannot recurse without bound.
const MAX_ARRAY_DEPTH: usize = 3;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// Value type ids in the order the GGUF spec numbers them (0..=12).
const TYPE_NAMES: [&str; 13] =
    ["u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"];

/// The fewest bytes one value of each type takes, to bound array lengths before allocating.
const MIN_VALUE_BYTES: [usize; 13] = [1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8];

impl GgufValue {
    pub fn type_id(&self) -> u32 {
        match self {
            GgufValue::U8(_) => 0,
            GgufValue::I8(_) => 1,
            GgufValue::U16(_) => 2,
            GgufValue::I16(_) => 3,
            GgufValue::U32(_) => 4,
            GgufValue::I32(_) => 5,
            GgufValue::F32(_) => 6,
            GgufValue::Bool(_) => 7,
            GgufValue::String(_) => 8,
            GgufValue::Array(_) => 9,
            GgufValue::U64(_) => 10,
            GgufValue::I64(_) => 11,
            GgufValue::F64(_) => 12,
        }
    }

    pub fn type_name(&self) -> &'static str {
        TYPE_NAMES[self.type_id() as usize]
    }

    /// Any integer that is not negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer (what token-type arrays hold).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::I8(v) => Some(v.into()),
            GgufValue::I16(v) => Some(v.into()),
            GgufValue::I32(v) => Some(v.into()),
            GgufValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// Any number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// Where one tensor lives and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// ggml's `ne`: element counts fastest-varying first, so an HF `[rows, cols]` matrix has
    /// `dims == [cols, rows]`.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Byte offset from the start of the data section.
    pub offset: u64,
    pub n_bytes: u64,
}

impl GgufTensorInfo {
    /// The row-major shape (slowest dimension first), as safetensors and HF write it.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    pub fn numel(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }
}

/// Everything before the data section, parsed and checked against the file's length.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    pub version: u32,
    pub alignment: usize,
    /// Metadata in file order.
    pub metadata: Vec<(String, GgufValue)>,
    pub tensors: Vec<GgufTensorInfo>,
    /// Byte offset of the data section in the file.
    pub data_start: usize,
}

impl GgufHeader {
    /// Parses `bytes`, the whole file; `path` only names the file in errors. Fails if any
    /// tensor's data would run past `bytes.len()`.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let bad = |m: String| Error::bad_file(path, m);
        let mut cur = Cursor { bytes, pos: 0, section: "header".into() };
        if bytes.len() < 4 {
            return Err(bad(format!("truncated header: {} bytes, a GGUF file starts with 24", bytes.len())));
        }
        if &bytes[..4] != MAGIC {
            return Err(bad(format!("bad magic {}: not a GGUF file (expected \"GGUF\")", show_magic(&bytes[..4]))));
        }
        cur.pos = 4;
        let version = cur.u32().map_err(&bad)?;
        match version {
            2 | 3 => {}
            1 => return Err(bad("unsupported GGUF version 1 (rooflab reads versions 2 and 3)".into())),
            v if v.swap_bytes() <= 3 => {
                return Err(bad(format!(
                    "unsupported GGUF version {v}: a big-endian file? rooflab reads little-endian"
                )))
            }
            v => return Err(bad(format!("unsupported GGUF version {v} (rooflab reads versions 2 and 3)"))),
        }
        let tensor_count = cur.u64().map_err(&bad)?;
        let kv_count = cur.u64().map_err(&bad)?;
        // Each entry takes at least a key length, a type and one byte; each tensor info at least
        // a name length, a dimension count, a type and an offset.
        cur.section = "metadata".into();
        cur.check_count(kv_count, 13, "metadata entries").map_err(&bad)?;
        cur.section = "tensor infos".into();
        cur.check_count(tensor_count, 24, "tensor infos").map_err(&bad)?;

        let mut metadata = Vec::with_capacity(kv_count as usize);
        let mut keys = HashSet::new();
        for i in 0..kv_count {
            cur.section = format!("metadata entry #{i}");
            let key = cur.string().map_err(&bad)?;
            cur.section = format!("metadata `{key}`");
            let ty = cur.u32().map_err(&bad)?;
            let value = cur.value(ty, 0).map_err(&bad)?;
            if !keys.insert(key.clone()) {
                return Err(bad(format!("metadata key `{key}` appears twice")));
            }
            metadata.push((key, value));
        }

        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, GgufValue::U32(a))) if a.is_power_of_two() => *a as usize,
            Some((_, v)) => return Err(bad(format!("general.alignment must be a power of two u32, found {v:?}"))),
        };

        let mut tensors = Vec::with_capacity(tensor_count as usize);
        let mut names = HashSet::new();
        for i in 0..tensor_count {
            cur.section = format!("tensor info #{i}");
            let info = cur.tensor_info(alignment).map_err(&bad)?;
            if !names.insert(info.name.clone()) {
                return Err(bad(format!("tensor `{}` appears twice", info.name)));
            }
            tensors.push(info);
        }

        let data_start = cur.pos.div_ceil(alignment) * alignment;
        for t in &tensors {
            let end = (data_start as u64).checked_add(t.offset).and_then(|s| s.checked_add(t.n_bytes));
            if end.is_none_or(|end| end > bytes.len() as u64) {
                return Err(bad(format!(
                    "tensor `{}` ({} {:?}) runs past the end of the file: its data spans bytes {}..{} of {}",
                    t.name,
                    t.ty,
                    t.shape(),
                    data_start as u128 + t.offset as u128,
                    data_start as u128 + t.offset as u128 + t.n_bytes as u128,
                    bytes.len()
                )));
            }
        }
        Ok(GgufHeader { version, alignment, metadata, tensors, data_start })
    }
}

/// The first bytes of a file, readable in an error message.
fn show_magic(b: &[u8]) -> String {
    if b.iter().all(|c| c.is_ascii_graphic()) {
        format!("\"{}\"", String::from_utf8_lossy(b))
    } else {
        format!("0x{}", b.iter().map(|c| format!("{c:02x}")).collect::<String>())
    }
}

/// A reading position in the file; `section` names what is being read, for errors.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    section: String,
}

type ParseResult<T> = std::result::Result<T, String>;

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> ParseResult<&'a [u8]> {
        let left = self.bytes.len() - self.pos;
        if n > left {
            return Err(format!(
                "truncated {}: needs {n} bytes at offset {} but the file ends at {}",
                self.section,
                self.pos,
                self.bytes.len()
            ));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> ParseResult<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    fn u32(&mut self) -> ParseResult<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> ParseResult<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Fails unless `count` items of at least `min_bytes` each fit in what is left.
    fn check_count(&self, count: u64, min_bytes: usize, what: &str) -> ParseResult<()> {
        let left = (self.bytes.len() - self.pos) as u64;
        if count > left / min_bytes as u64 {
            return Err(format!(
                "truncated {}: {count} {what} cannot fit in the {left} bytes left after offset {}",
                self.section, self.pos
            ));
        }
        Ok(())
    }

    fn string(&mut self) -> ParseResult<String> {
        let len = self.u64()?;
        let len = usize::try_from(len).map_err(|_| format!("{}: string length {len} is too large", self.section))?;
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec())
            .map_err(|_| format!("{}: string at offset {} is not UTF-8", self.section, self.pos - len))
    }

    fn value(&mut self, ty: u32, depth: usize) -> ParseResult<GgufValue> {
        Ok(match ty {
            0 => GgufValue::U8(self.array::<1>()?[0]),
            1 => GgufValue::I8(self.array::<1>()?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.array()?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array()?)),
            4 => GgufValue::U32(self.u32()?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array()?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array()?)),
            7 => match self.array::<1>()?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(format!("{}: bool byte {b} is neither 0 nor 1", self.section)),
            },
            8 => GgufValue::String(self.string()?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(format!("{}: arrays nested more than {MAX_ARRAY_DEPTH} deep", self.section));
                }
                let elem = self.u32()?;
                let Some(&min) = MIN_VALUE_BYTES.get(elem as usize) else {
                    return Err(format!("{}: unknown array element type {elem}", self.section));
                };
                let n = self.u64()?;
                self.check_count(n, min, &format!("{} array elements", TYPE_NAMES[elem as usize]))?;
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(elem, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64()?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array()?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array()?)),
            other => return Err(format!("{}: unknown value type {other}", self.section)),
        })
    }

    fn tensor_info(&mut self, alignment: usize) -> ParseResult<GgufTensorInfo> {
        let name = self.string()?;
        self.section = format!("tensor info `{name}`");
        let n_dims = self.u32()? as usize;
        if n_dims > MAX_DIMS {
            return Err(format!("tensor `{name}` has {n_dims} dimensions (ggml allows at most {MAX_DIMS})"));
        }
        let mut dims = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            dims.push(self.u64()?);
        }
        let type_id = self.u32()?;
        let offset = self.u64()?;
        let Some(ty) = GgmlType::from_id(type_id) else {
            return Err(format!("tensor `{name}` has unknown tensor type {type_id}"));
        };
        // ggml keeps ne as int64 and sizes in size_t; anything larger is corrupt.
        let numel = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d).filter(|n| *n <= i64::MAX as u64));
        let Some(numel) = numel else {
            return Err(format!("tensor `{name}` has dims {dims:?}, too many elements"));
        };
        let row = dims.first().copied().unwrap_or(1);
        if row % ty.block_size() as u64 != 0 {
            return Err(format!(
                "tensor `{name}`: rows of {row} elements are not a whole number of {ty} blocks ({} elements)",
                ty.block_size()
            ));
        }
        let n_bytes = ty.bytes_for(numel).ok_or_else(|| format!("tensor `{name}`: size of {numel} {ty} overflows"))?;
        if offset % alignment as u64 != 0 {
            return Err(format!(
                "tensor `{name}`: data offset {offset} is not a multiple of the alignment {alignment}"
            ));
        }
        Ok(GgufTensorInfo { name, dims, ty, offset, n_bytes })
    }
}

/// A GGUF file mapped into memory, with its header parsed.
pub struct GgufFile {
    pub path: PathBuf,
    pub header: GgufHeader,
    keys: HashMap<String, usize>,
    tensor_index: HashMap<String, usize>,
    map: Mmap,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GgufFile({}, v{}, {} tensors)", self.path.display(), self.header.version, self.header.tensors.len())
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the mapping is read-only and rooflab never writes a GGUF it is reading; a file
        // changed underneath by another process is outside what any mmap-based loader can guard.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let header = GgufHeader::parse(path, &map)?;
        let keys = header.metadata.iter().enumerate().map(|(i, (k, _))| (k.clone(), i)).collect();
        let tensor_index = header.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Ok(GgufFile { path: path.to_path_buf(), header, keys, tensor_index, map })
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.keys.get(key).map(|&i| &self.header.metadata[i].1)
    }

    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.header.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.header.tensors[i])
    }

    /// The raw (possibly quantised) bytes of a tensor of this file.
    pub fn tensor_data(&self, t: &GgufTensorInfo) -> &[u8] {
        let start = self.header.data_start + t.offset as usize;
        &self.map[start..start + t.n_bytes as usize]
    }

    /// A tensor decoded to f32, in ggml order (which is row-major for [`GgufTensorInfo::shape`]).
    pub fn dequantize(&self, t: &GgufTensorInfo) -> Result<Vec<f32>> {
        if !t.ty.can_dequantize() {
            return Err(Error::Unsupported(format!(
                "{}: tensor `{}` has type {}, which rooflab cannot dequantise (supported: {})",
                self.path.display(),
                t.name,
                t.ty,
                ggml::DEQUANTIZABLE
            )));
        }
        ggml::dequantize_to_vec(t.ty, self.tensor_data(t), t.numel())
    }

    fn key_error(&self, key: &str, message: &str) -> Error {
        Error::bad_file(&self.path, format!("metadata `{key}` {message}"))
    }

    fn typed<T>(&self, key: &str, want: &str, cast: impl Fn(&GgufValue) -> Option<T>) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => cast(v)
                .map(Some)
                .ok_or_else(|| self.key_error(key, &format!("is a {}, expected {want}", v.type_name()))),
        }
    }

    /// An optional non-negative integer key; present with another type is an error.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        self.typed(key, "a non-negative integer", GgufValue::as_u64)
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        self.typed(key, "a number", GgufValue::as_f64)
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, "a bool", GgufValue::as_bool)
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(GgufValue::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.key_error(key, &format!("is a {}, expected a string", v.type_name()))),
        }
    }

    pub fn u64_key(&self, key: &str) -> Result<u64> {
        self.opt_u64(key)?.ok_or_else(|| self.key_error(key, "is missing"))
    }

    pub fn f64_key(&self, key: &str) -> Result<f64> {
        self.opt_f64(key)?.ok_or_else(|| self.key_error(key, "is missing"))
    }

    pub fn str_key(&self, key: &str) -> Result<&str> {
        self.opt_str(key)?.ok_or_else(|| self.key_error(key, "is missing"))
    }

    /// An optional array whose elements all convert with `cast` (`want` names their type).
    pub fn opt_array<T>(
        &self,
        key: &str,
        want: &str,
        cast: impl Fn(&GgufValue) -> Option<T>,
    ) -> Result<Option<Vec<T>>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let items =
            v.as_array().ok_or_else(|| self.key_error(key, &format!("is a {}, expected an array", v.type_name())))?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                cast(item).ok_or_else(|| {
                    self.key_error(key, &format!("element {i} is a {}, expected {want}", item.type_name()))
                })
            })
            .collect::<Result<Vec<T>>>()
            .map(Some)
    }
}

/// One tensor for [`gguf_bytes`]: name, type, ggml dims (fastest first) and its encoded bytes.
pub type TensorToWrite = (String, GgmlType, Vec<u64>, Vec<u8>);

/// Encodes a version-3 GGUF file. Tensors are laid out in order, each padded to the alignment
/// (`general.alignment` when the metadata sets it as a u32, else 32). For tests and tools: this
/// is how the parser and the importer are exercised without a real checkpoint.
pub fn gguf_bytes(metadata: &[(String, GgufValue)], tensors: &[TensorToWrite]) -> Result<Vec<u8>> {
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        Some((_, GgufValue::U32(a))) => *a as usize,
        _ => DEFAULT_ALIGNMENT,
    };
    let mut out = MAGIC.to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_string(&mut out, key);
        out.extend(value.type_id().to_le_bytes());
        put_value(&mut out, value)?;
    }
    let mut offset = 0u64;
    let mut placed = Vec::with_capacity(tensors.len());
    for (name, ty, dims, bytes) in tensors {
        let numel = dims.iter().product::<u64>();
        if ty.bytes_for(numel) != Some(bytes.len() as u64) {
            return Err(Error::Invalid(format!("tensor `{name}`: {} bytes for {dims:?} of {ty}", bytes.len())));
        }
        put_string(&mut out, name);
        out.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            out.extend(d.to_le_bytes());
        }
        out.extend(ty.id().to_le_bytes());
        out.extend(offset.to_le_bytes());
        placed.push(offset);
        offset = (offset + bytes.len() as u64).div_ceil(alignment as u64) * alignment as u64;
    }
    out.resize(out.len().div_ceil(alignment) * alignment, 0);
    let data_start = out.len();
    for ((_, _, _, bytes), at) in tensors.iter().zip(placed) {
        out.resize(data_start + at as usize, 0);
        out.extend_from_slice(bytes);
    }
    Ok(out)
}

/// Writes [`gguf_bytes`] to `path`.
pub fn write_gguf(path: &Path, metadata: &[(String, GgufValue)], tensors: &[TensorToWrite]) -> Result<()> {
    std::fs::write(path, gguf_bytes(metadata, tensors)?).map_err(|e| Error::io(path, e))
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &GgufValue) -> Result<()> {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.push(*x as u8),
        GgufValue::U16(x) => out.extend(x.to_le_bytes()),
        GgufValue::I16(x) => out.extend(x.to_le_bytes()),
        GgufValue::U32(x) => out.extend(x.to_le_bytes()),
        GgufValue::I32(x) => out.extend(x.to_le_bytes()),
        GgufValue::F32(x) => out.extend(x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(*x as u8),
        GgufValue::String(s) => put_string(out, s),
        GgufValue::U64(x) => out.extend(x.to_le_bytes()),
        GgufValue::I64(x) => out.extend(x.to_le_bytes()),
        GgufValue::F64(x) => out.extend(x.to_le_bytes()),
        GgufValue::Array(items) => {
            // An empty array is written as an array of u8; GGUF needs some element type.
            let elem = items.first().map_or(0, GgufValue::type_id);
            if items.iter().any(|i| i.type_id() != elem) {
                return Err(Error::Invalid("GGUF arrays hold one element type".into()));
            }
            out.extend(elem.to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(v: &str) -> GgufValue {
        GgufValue::String(v.into())
    }

    /// A small file with every value type, an array of strings, and two tensors.
    fn sample() -> (Vec<(String, GgufValue)>, Vec<TensorToWrite>) {
        let meta = vec![
            ("general.architecture".to_string(), s("llama")),
            ("a.u8".into(), GgufValue::U8(7)),
            ("a.i8".into(), GgufValue::I8(-7)),
            ("a.u16".into(), GgufValue::U16(700)),
            ("a.i16".into(), GgufValue::I16(-700)),
            ("a.u32".into(), GgufValue::U32(70000)),
            ("a.i32".into(), GgufValue::I32(-70000)),
            ("a.f32".into(), GgufValue::F32(0.25)),
            ("a.bool".into(), GgufValue::Bool(true)),
            ("a.u64".into(), GgufValue::U64(1 << 40)),
            ("a.i64".into(), GgufValue::I64(-(1 << 40))),
            ("a.f64".into(), GgufValue::F64(-1.5)),
            ("a.strings".into(), GgufValue::Array(vec![s("Ġthe"), s(""), s("<|im_end|>")])),
            ("a.ints".into(), GgufValue::Array(vec![GgufValue::I32(1), GgufValue::I32(3)])),
            ("a.nested".into(), GgufValue::Array(vec![GgufValue::Array(vec![GgufValue::U8(1)])])),
        ];
        let f32s: Vec<u8> = (0..6).flat_map(|i| (i as f32 * 0.5 - 1.0).to_le_bytes()).collect();
        let q8 = ggml::quantize_q8_0(&(0..64).map(|i| (i as f32 - 30.0) / 8.0).collect::<Vec<_>>()).unwrap();
        let tensors = vec![
            ("norm".to_string(), GgmlType::F32, vec![3, 2], f32s),
            ("w".to_string(), GgmlType::Q8_0, vec![32, 2], q8),
        ];
        (meta, tensors)
    }

    fn parse(bytes: &[u8]) -> Result<GgufHeader> {
        GgufHeader::parse(Path::new("x.gguf"), bytes)
    }

    fn err(bytes: &[u8]) -> String {
        parse(bytes).unwrap_err().to_string()
    }

    #[test]
    fn round_trips_every_value_type_and_tensor() {
        let (meta, tensors) = sample();
        let bytes = gguf_bytes(&meta, &tensors).unwrap();
        let h = parse(&bytes).unwrap();
        assert_eq!((h.version, h.alignment), (3, 32));
        assert_eq!(h.metadata, meta);
        assert_eq!(h.data_start % 32, 0);
        assert_eq!(h.tensors[0].shape(), vec![2, 3]);
        assert_eq!((h.tensors[1].offset, h.tensors[1].n_bytes), (32, 68));

        let dir = std::env::temp_dir().join(format!("rooflab-gguf-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sample.gguf");
        write_gguf(&path, &meta, &tensors).unwrap();
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.opt_u64("a.u16").unwrap(), Some(700));
        assert_eq!(f.opt_f64("a.i32").unwrap(), Some(-70000.0));
        assert!(f.opt_u64("a.i8").unwrap_err().to_string().contains("`a.i8` is a i8, expected a non-negative integer"));
        assert_eq!(f.str_key("general.architecture").unwrap(), "llama");
        assert!(f.str_key("nope").unwrap_err().to_string().contains("metadata `nope` is missing"));
        let strings = f.opt_array("a.strings", "a string", |v| v.as_str().map(String::from)).unwrap().unwrap();
        assert_eq!(strings, ["Ġthe", "", "<|im_end|>"]);
        assert_eq!(f.dequantize(f.tensor("norm").unwrap()).unwrap(), vec![-1.0, -0.5, 0.0, 0.5, 1.0, 1.5]);
        let w = f.dequantize(f.tensor("w").unwrap()).unwrap();
        assert!((w[63] - 33.0 / 8.0).abs() < 0.02 && (w[0] + 30.0 / 8.0).abs() < 0.02, "{:?}", &w[..4]);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn honours_general_alignment() {
        let (mut meta, tensors) = sample();
        meta.push(("general.alignment".into(), GgufValue::U32(64)));
        let h = parse(&gguf_bytes(&meta, &tensors).unwrap()).unwrap();
        assert_eq!((h.alignment, h.data_start % 64, h.tensors[1].offset), (64, 0, 64));
        meta.last_mut().unwrap().1 = GgufValue::U32(48);
        assert!(err(&gguf_bytes(&meta, &[]).unwrap()).contains("general.alignment must be a power of two"));
    }

    #[test]
    fn names_each_problem() {
        let (meta, tensors) = sample();
        let good = gguf_bytes(&meta, &tensors).unwrap();
        let mut b = good.clone();
        b[..4].copy_from_slice(b"GGML");
        assert!(err(&b).contains("bad magic \"GGML\": not a GGUF file"), "{}", err(&b));
        let mut b = good.clone();
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        assert!(err(&b).contains("unsupported GGUF version 1"));
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        assert!(err(&b).contains("big-endian"));
        b[4..8].copy_from_slice(&9u32.to_le_bytes());
        assert!(err(&b).contains("unsupported GGUF version 9"));
        assert!(err(&good[..2]).contains("truncated header"));
        assert!(
            err(&good[..60]).contains("truncated metadata: 15 metadata entries cannot fit"),
            "{}",
            err(&good[..60])
        );
        let strings_at = good.windows(9).position(|w| w == b"a.strings").unwrap();
        let e = err(&good[..strings_at + 30]);
        assert!(e.contains("truncated metadata `a.strings`: 3 string array elements cannot fit"), "{e}");
        assert!(err(&good[..good.len() - 1]).contains("tensor `w` (Q8_0 [2, 32]) runs past the end of the file"));

        // An unknown tensor type: rewrite the type id of the first tensor (after its dims).
        let h = parse(&good).unwrap();
        let info_start = good.windows(12).position(|w| w == b"\x04\0\0\0\0\0\0\0norm").unwrap() + 12;
        let type_at = info_start + 4 + 2 * 8;
        let mut b = good.clone();
        b[type_at..type_at + 4].copy_from_slice(&99u32.to_le_bytes());
        assert!(err(&b).contains("tensor `norm` has unknown tensor type 99"), "{}", err(&b));
        b[type_at..type_at + 4].copy_from_slice(&GgmlType::Q4_0.id().to_le_bytes());
        assert!(err(&b).contains("not a whole number of Q4_0 blocks"));
        let mut b = good.clone();
        b[info_start..info_start + 4].copy_from_slice(&5u32.to_le_bytes());
        assert!(err(&b).contains("5 dimensions"));
        assert!(h.tensors[0].n_bytes == 24);
    }

    #[test]
    fn refuses_duplicates_and_absurd_counts() {
        let (meta, _) = sample();
        let dup = vec![meta[1].clone(), meta[1].clone()];
        assert!(err(&gguf_bytes(&dup, &[]).unwrap()).contains("`a.u8` appears twice"));
        let mut b = gguf_bytes(&meta, &[]).unwrap();
        b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(err(&b).contains("metadata entries cannot fit"), "{}", err(&b));
    }

    #[test]
    fn every_truncation_of_a_valid_file_is_an_error() {
        let (meta, tensors) = sample();
        let good = gguf_bytes(&meta, &tensors).unwrap();
        for cut in 0..good.len() {
            let e = parse(&good[..cut]).expect_err("a cut file must not parse");
            assert!(e.to_string().starts_with("x.gguf: "), "{e}");
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..400), version in 2u32..4) {
            let _ = parse(&tail);
            let mut b = MAGIC.to_vec();
            b.extend(version.to_le_bytes());
            b.extend(tail);
            let _ = parse(&b);
        }

        #[test]
        fn corrupted_bytes_of_a_valid_file_never_panic(at in 0usize..2000, byte in any::<u8>(), cut in 0usize..2000) {
            let (meta, tensors) = sample();
            let mut b = gguf_bytes(&meta, &tensors).unwrap();
            let n = b.len();
            b[at % n] = byte;
            b.truncate(n - cut % 64);
            let _ = parse(&b);
        }
    }
}
