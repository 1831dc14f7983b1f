//! Memory-mapped safetensors checkpoints: one `model.safetensors`, or shards listed in
//! `model.safetensors.index.json`. Tensors stay in the page cache; nothing is copied until a
//! backend asks (the CPU reference reads rows in place, the GPU path uploads each tensor once).

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::{bf16, f16};
use memmap2::Mmap;
use serde::Deserialize;

use crate::{Error, Result};

/// Element types a checkpoint may hold for the engine's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    pub fn safetensors_name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
        }
    }

    fn from_safetensors(name: &str) -> Option<DType> {
        match name {
            "F32" => Some(DType::F32),
            "F16" => Some(DType::F16),
            "BF16" => Some(DType::BF16),
            _ => None,
        }
    }
}

/// A tensor inside a mapped file: its type, shape and bytes (little-endian, row-major).
#[derive(Clone)]
pub struct Tensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    file: Arc<Mmap>,
    range: Range<usize>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({} {:?} {:?})", self.name, self.dtype, self.shape)
    }
}

impl Tensor {
    pub fn bytes(&self) -> &[u8] {
        &self.file[self.range.clone()]
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Fails with a message naming the tensor unless its shape is `expected`.
    pub fn expect_shape(&self, expected: &[usize]) -> Result<&Self> {
        if self.shape != expected {
            return Err(Error::BadShape {
                name: self.name.clone(),
                found: self.shape.clone(),
                expected: expected.to_vec(),
            });
        }
        Ok(self)
    }

    /// Element `i` widened to f32.
    pub fn get_f32(&self, i: usize) -> f32 {
        decode_f32(self.dtype, self.bytes(), i)
    }

    /// The whole tensor widened to f32 (for small tensors: norms, test fixtures).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.numel()];
        widen_into(self.dtype, self.bytes(), &mut out);
        out
    }

    /// The whole tensor as bf16 (rounded to nearest even from f32 or f16).
    pub fn to_bf16_vec(&self) -> Vec<bf16> {
        match self.dtype {
            DType::BF16 => self.bytes().chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]])).collect(),
            _ => self.to_f32_vec().into_iter().map(bf16::from_f32).collect(),
        }
    }
}

/// Element `i` of a little-endian buffer of `dtype`, as f32.
#[inline]
pub fn decode_f32(dtype: DType, bytes: &[u8], i: usize) -> f32 {
    match dtype {
        DType::F32 => f32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap()),
        DType::F16 => f16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]).to_f32(),
        DType::BF16 => f32::from_bits((u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]) as u32) << 16),
    }
}

/// Widens `out.len()` elements of `bytes` into `out`. Written as plain loops over fixed-size
/// chunks so the compiler vectorises the bf16 case (a shift) and the f32 case (a copy).
#[inline]
pub fn widen_into(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        DType::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        DType::BF16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
            }
        }
        DType::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
    }
}

/// The tensors of a checkpoint folder, memory-mapped.
pub struct Checkpoint {
    pub dir: PathBuf,
    tensors: HashMap<String, Tensor>,
    /// Bytes of all mapped files (the checkpoint's size on disk).
    pub file_bytes: usize,
}

#[derive(Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: HashMap<String, String>,
}

impl Checkpoint {
    /// Opens `dir/model.safetensors`, or the shards named by `dir/model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
            let idx: ShardIndex =
                serde_json::from_str(&text).map_err(|e| Error::bad_file(&index, format!("bad shard index: {e}")))?;
            let mut shards: Vec<String> = idx.weight_map.into_values().collect();
            shards.sort();
            shards.dedup();
            shards.into_iter().map(|s| dir.join(s)).collect()
        } else {
            return Err(Error::bad_file(dir, "no model.safetensors or model.safetensors.index.json"));
        };
        let mut tensors = HashMap::new();
        let mut file_bytes = 0;
        for path in files {
            let mapped = map_safetensors(&path)?;
            file_bytes += mapped.1;
            for t in mapped.0 {
                if let Some(prev) = tensors.insert(t.name.clone(), t) {
                    return Err(Error::bad_file(&path, format!("tensor `{}` appears in two shards", prev.name)));
                }
            }
        }
        Ok(Checkpoint { dir: dir.to_path_buf(), tensors, file_bytes })
    }

    /// Opens one safetensors file on its own (test fixtures, kernel inputs for `run-kernel`).
    pub fn open_file(path: &Path) -> Result<Self> {
        let (list, file_bytes) = map_safetensors(path)?;
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Ok(Checkpoint { dir, tensors: list.into_iter().map(|t| (t.name.clone(), t)).collect(), file_bytes })
    }

    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| Error::MissingTensor(name.to_string()))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// A tensor that must have `shape`.
    pub fn weight(&self, name: &str, shape: &[usize]) -> Result<&Tensor> {
        self.get(name)?.expect_shape(shape)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(|s| s.as_str())
    }
}

/// Maps one safetensors file and checks its header against the file's length.
fn map_safetensors(path: &Path) -> Result<(Vec<Tensor>, usize)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the mapping is read-only; the engine never writes checkpoint files while reading them.
    let map = Arc::new(unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?);
    let len = map.len();
    let bad = |m: String| Error::bad_file(path, m);
    if len < 8 {
        return Err(bad(format!("truncated safetensors file ({len} bytes, no header)")));
    }
    let header_len = u64::from_le_bytes(map[..8].try_into().unwrap()) as usize;
    if header_len > len - 8 {
        return Err(bad(format!("truncated safetensors file: header of {header_len} bytes, file of {len}")));
    }
    let data_start = 8 + header_len;
    let header: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&map[8..data_start]).map_err(|e| bad(format!("unreadable safetensors header: {e}")))?;
    let mut tensors = Vec::new();
    for (name, value) in header {
        if name == "__metadata__" {
            continue;
        }
        let entry: HeaderEntry =
            serde_json::from_value(value).map_err(|e| bad(format!("tensor `{name}`: bad header entry: {e}")))?;
        let [begin, end] = entry.data_offsets;
        let Some(dtype) = DType::from_safetensors(&entry.dtype) else {
            return Err(Error::BadDtype { name, found: entry.dtype, expected: "F32, F16, BF16".into() });
        };
        let numel: usize = entry.shape.iter().product();
        if end < begin || end - begin != numel * dtype.size() {
            return Err(bad(format!(
                "tensor `{name}`: {} bytes for shape {:?} of {:?}",
                end.wrapping_sub(begin),
                entry.shape,
                dtype
            )));
        }
        if data_start + end > len {
            return Err(bad(format!(
                "truncated safetensors file: tensor `{name}` ends at byte {} but the file has {len}",
                data_start + end
            )));
        }
        tensors.push(Tensor {
            name,
            dtype,
            shape: entry.shape,
            file: map.clone(),
            range: data_start + begin..data_start + end,
        });
    }
    Ok((tensors, len))
}

/// Writes tensors (name, dtype, shape, little-endian bytes) as one safetensors file. Used by the
/// GGUF importer and by tests that build random checkpoints.
pub fn write_safetensors(path: &Path, tensors: &[(String, DType, Vec<usize>, Vec<u8>)]) -> Result<()> {
    use std::io::Write;
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    let mut sorted: Vec<&(String, DType, Vec<usize>, Vec<u8>)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, dtype, shape, bytes) in &sorted {
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype.safetensors_name(), "shape": shape, "data_offsets": [offset, offset + bytes.len()]}),
        );
        offset += bytes.len();
    }
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut text = serde_json::to_string(&header).map_err(|e| Error::Invalid(e.to_string()))?.into_bytes();
    while (8 + text.len()) % 8 != 0 {
        text.push(b' ');
    }
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = std::io::BufWriter::new(file);
    let io = |e| Error::io(path, e);
    w.write_all(&(text.len() as u64).to_le_bytes()).map_err(io)?;
    w.write_all(&text).map_err(io)?;
    for (_, _, _, bytes) in sorted {
        w.write_all(bytes).map_err(io)?;
    }
    w.flush().map_err(io)
}
