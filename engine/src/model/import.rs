//! `rooflab import-gguf`: converts a llama.cpp GGUF of a Llama-style model into the HF folder the
//! rest of the engine loads (`config.json`, `model.safetensors`, `tokenizer.json`,
//! `tokenizer_config.json`, `generation_config.json`).
//!
//! Tensors are dequantised one at a time and streamed into the safetensors file (its header is
//! computed from the shapes first), so peak memory is one tensor in f32 plus its encoded copy,
//! not the model. `config.json` is written last, after everything else is in place: a folder
//! with a `config.json` is a finished import (scripts/fetch-model relies on this).

mod tensors;
mod tokenizer;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde_json::{json, Value};

pub use tensors::{llama3_scaling_from_factors, permute_rows, unpermute_rows};
pub use tokenizer::{merges_from_scores, pre_tokenizer, BuiltTokenizer};

use super::gguf::GgufFile;
use super::{Checkpoint, DType, LlamaConfig};
use crate::model::weights::LlamaTensors;
use crate::{Error, Result};

/// What an import produced.
#[derive(Debug, Clone)]
pub struct ImportSummary {
    pub out_dir: PathBuf,
    pub tensors: usize,
    pub params: usize,
    /// Bytes of every file written (safetensors and JSON).
    pub bytes_written: u64,
    pub dtype: DType,
    pub vocab_size: usize,
    pub tied_embeddings: bool,
}

/// One line for the command line, e.g. `272 tensors, 134.5M parameters (tied embeddings), vocabulary
/// of 49152, BF16, 270.4 MB written`; the caller says what was imported where.
impl std::fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} tensors, {:.1}M parameters ({} embeddings), vocabulary of {}, {:?}, {:.1} MB written",
            self.tensors,
            self.params as f64 / 1e6,
            if self.tied_embeddings { "tied" } else { "untied" },
            self.vocab_size,
            self.dtype,
            self.bytes_written as f64 / 1e6
        )
    }
}

/// The model shape read from the `{arch}.*` metadata keys.
#[derive(Debug, Clone)]
pub struct Hparams {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub context: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// `{arch}.rope.scaling.original_context_length`, when present.
    pub original_context: Option<u64>,
}

impl Hparams {
    pub fn read(gguf: &GgufFile) -> Result<Self> {
        let path = gguf.path.display();
        let arch = gguf.str_key("general.architecture")?;
        if arch != "llama" {
            return Err(Error::Unsupported(format!("{path}: architecture `{arch}` (rooflab imports `llama` GGUFs)")));
        }
        let key = |k: &str| format!("{arch}.{k}");
        let size = |k: &str| -> Result<usize> { Ok(gguf.u64_key(&key(k))? as usize) };
        let opt_size = |k: &str| -> Result<Option<usize>> { Ok(gguf.opt_u64(&key(k))?.map(|v| v as usize)) };
        if let Some(kind) = gguf.opt_str(&key("rope.scaling.type"))?.filter(|k| *k != "none") {
            return Err(Error::Unsupported(format!("{path}: rope scaling `{kind}` (only llama3-style is supported)")));
        }
        if opt_size("expert_count")?.unwrap_or(0) > 0 {
            return Err(Error::Unsupported(format!("{path}: mixture-of-experts models")));
        }
        let hidden = size("embedding_length")?;
        let heads = size("attention.head_count")?;
        let kv_heads = opt_size("attention.head_count_kv")?.unwrap_or(heads);
        let head_dim = match opt_size("attention.key_length")? {
            Some(d) => d,
            None if heads > 0 => hidden / heads,
            None => 0,
        };
        if let Some(vd) = opt_size("attention.value_length")?.filter(|&vd| vd != head_dim) {
            return Err(Error::Unsupported(format!(
                "{path}: value head size {vd} differs from key head size {head_dim}"
            )));
        }
        if let Some(rd) = opt_size("rope.dimension_count")?.filter(|&rd| rd != head_dim) {
            return Err(Error::Unsupported(format!("{path}: rotary on {rd} of {head_dim} head dimensions")));
        }
        let vocab = match opt_size("vocab_size")? {
            Some(v) => v,
            None => {
                gguf.tensor("token_embd.weight").and_then(|t| t.dims.get(1)).map(|&v| v as usize).ok_or_else(|| {
                    Error::bad_file(
                        &gguf.path,
                        format!("no {arch}.vocab_size and no token_embd.weight to infer it from"),
                    )
                })?
            }
        };
        Ok(Hparams {
            hidden,
            intermediate: size("feed_forward_length")?,
            layers: size("block_count")?,
            heads,
            kv_heads,
            head_dim,
            vocab,
            context: size("context_length")?,
            rms_norm_eps: gguf.f64_key(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta: gguf.opt_f64(&key("rope.freq_base"))?.unwrap_or(10000.0),
            original_context: gguf.opt_u64(&key("rope.scaling.original_context_length"))?,
        })
    }
}

/// A float as config.json should show it: GGUF stores f32, whose f64 widening prints as
/// `9.999999747378752e-6`; the shortest f32 text (`1e-5`) is what the HF config said.
fn f32_json(v: f64) -> Value {
    let shortest: f64 = (v as f32).to_string().parse().unwrap_or(v);
    json!(shortest)
}

fn torch_dtype(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "float32",
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
    }
}

/// One id, or a list when there are several (HF accepts both for `eos_token_id`).
fn one_or_many(ids: &[u32]) -> Value {
    match ids {
        [one] => json!(one),
        many => json!(many),
    }
}

fn config_json(hp: &Hparams, tied: bool, rope_scaling: Option<Value>, tok: &BuiltTokenizer, dtype: DType) -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hp.hidden,
        "intermediate_size": hp.intermediate,
        "num_hidden_layers": hp.layers,
        "num_attention_heads": hp.heads,
        "num_key_value_heads": hp.kv_heads,
        "head_dim": hp.head_dim,
        "hidden_act": "silu",
        "attention_bias": false,
        "mlp_bias": false,
        "rms_norm_eps": f32_json(hp.rms_norm_eps),
        "rope_theta": f32_json(hp.rope_theta),
        "rope_scaling": rope_scaling,
        "max_position_embeddings": hp.context,
        "vocab_size": hp.vocab,
        "tie_word_embeddings": tied,
        "bos_token_id": tok.bos.as_ref().map(|b| b.0),
        "eos_token_id": tok.eos.as_ref().map(|e| e.0),
        "torch_dtype": torch_dtype(dtype),
    })
}

fn tokenizer_config_json(tok: &BuiltTokenizer, chat_template: Option<&str>, context: usize) -> Value {
    let mut decoder = serde_json::Map::new();
    for t in tok.json["added_tokens"].as_array().into_iter().flatten() {
        let mut entry = t.clone();
        if let Some(o) = entry.as_object_mut() {
            o.remove("id");
        }
        decoder.insert(t["id"].to_string(), entry);
    }
    json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": tok.add_bos,
        "add_eos_token": tok.add_eos,
        "bos_token": tok.bos.as_ref().map(|b| &b.1),
        "eos_token": tok.eos.as_ref().map(|e| &e.1),
        "unk_token": tok.unk,
        "pad_token": tok.pad,
        "chat_template": chat_template,
        "model_max_length": context,
        "clean_up_tokenization_spaces": false,
        "added_tokens_decoder": decoder,
    })
}

fn generation_config_json(tok: &BuiltTokenizer) -> Value {
    json!({
        "bos_token_id": tok.bos.as_ref().map(|b| b.0),
        "eos_token_id": one_or_many(&tok.stop_ids),
    })
}

/// Writes `value` as pretty JSON and returns the bytes written.
fn write_json(path: &Path, value: &Value) -> Result<u64> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    std::fs::write(path, &text).map_err(|e| Error::io(path, e))?;
    Ok(text.len() as u64)
}

/// Text that exercises words, digits, punctuation, whitespace runs and multi-byte characters.
const ROUND_TRIP_SAMPLE: &str = "Hello world 123, naïve café!\n\tÜber  2 spaces ☕";

/// A rebuilt tokenizer must give back the text it encoded; a wrong decoder or a vocabulary that
/// misses bytes shows up here, before anything is written.
fn check_round_trip(tok: &tokenizers::Tokenizer, input: &Path) -> Result<()> {
    let fail = |what: String| Error::Tokenizer(format!("the tokenizer rebuilt from {}: {what}", input.display()));
    let enc = tok.encode(ROUND_TRIP_SAMPLE, false).map_err(|e| fail(format!("cannot encode: {e}")))?;
    let text = tok.decode(enc.get_ids(), false).map_err(|e| fail(format!("cannot decode: {e}")))?;
    if text != ROUND_TRIP_SAMPLE {
        return Err(fail(format!("{ROUND_TRIP_SAMPLE:?} decodes back as {text:?}")));
    }
    Ok(())
}

/// Converts the GGUF at `input` into an HF-style folder `out_dir` with weights in `dtype`.
/// Everything is checked (architecture, shapes, types, tokenizer, config) before the first
/// weight is written; `progress` shows a bar on stderr.
pub fn import_gguf(input: &Path, out_dir: &Path, dtype: DType, progress: bool) -> Result<ImportSummary> {
    let gguf = GgufFile::open(input)?;
    let hp = Hparams::read(&gguf)?;
    let plan = tensors::plan(&gguf, &hp)?;
    let tok = tokenizer::build(&gguf)?;
    if tok.vocab_size > hp.vocab {
        return Err(Error::bad_file(
            input,
            format!("{} tokens but an embedding table of {} rows", tok.vocab_size, hp.vocab),
        ));
    }
    let tokenizer_text = tok.json.to_string();
    let loaded: tokenizers::Tokenizer = tokenizer_text
        .parse()
        .map_err(|e| Error::Tokenizer(format!("the tokenizer rebuilt from {} does not load: {e}", input.display())))?;
    if tok.byte_complete {
        check_round_trip(&loaded, input)?;
    }
    drop(loaded);
    let config = config_json(&hp, plan.tied, plan.rope_scaling.clone(), &tok, dtype);
    LlamaConfig::from_json(&config.to_string())?;

    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    // A half-finished import must not look finished: remove an old config.json first.
    let config_path = out_dir.join("config.json");
    if config_path.exists() {
        std::fs::remove_file(&config_path).map_err(|e| Error::io(&config_path, e))?;
    }
    let tokenizer_path = out_dir.join("tokenizer.json");
    std::fs::write(&tokenizer_path, &tokenizer_text).map_err(|e| Error::io(&tokenizer_path, e))?;
    let mut written = tokenizer_text.len() as u64;
    let chat_template = gguf.opt_str("tokenizer.chat_template")?;
    written +=
        write_json(&out_dir.join("tokenizer_config.json"), &tokenizer_config_json(&tok, chat_template, hp.context))?;
    written += write_json(&out_dir.join("generation_config.json"), &generation_config_json(&tok))?;

    let (tensor_bytes, params) =
        write_weights(&gguf, &plan.tensors, &out_dir.join("model.safetensors"), dtype, progress)?;
    written += tensor_bytes;

    written += write_json(&config_path, &config)?;
    // The engine's own loaders are the final check that the folder is usable.
    let cfg = LlamaConfig::from_file(&config_path)?;
    LlamaTensors::gather(&Checkpoint::open(out_dir)?, &cfg)?;
    Ok(ImportSummary {
        out_dir: out_dir.to_path_buf(),
        tensors: plan.tensors.len(),
        params,
        bytes_written: written,
        dtype,
        vocab_size: tok.vocab_size,
        tied_embeddings: plan.tied,
    })
}

/// Dequantises each planned tensor, undoes the Q/K permutation, encodes it as `dtype` and
/// streams it into `path`. Returns (bytes written, parameters).
fn write_weights(
    gguf: &GgufFile,
    planned: &[tensors::PlannedTensor],
    path: &Path,
    dtype: DType,
    progress: bool,
) -> Result<(u64, usize)> {
    let entries: Vec<(String, Vec<usize>)> = planned.iter().map(|t| (t.hf_name.clone(), t.shape.clone())).collect();
    let mut writer = SafetensorsStream::create(path, dtype, &entries, input_note(&gguf.path))?;
    let total: u64 = entries.iter().map(|(_, s)| (s.iter().product::<usize>() * dtype.size()) as u64).sum();
    let bar = if progress { ProgressBar::new(total) } else { ProgressBar::hidden() };
    if let Ok(style) = ProgressStyle::with_template("importing [{bar:30}] {bytes}/{total_bytes} {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut params = 0;
    for t in planned {
        bar.set_message(t.hf_name.clone());
        let mut values = gguf.dequantize(t.src)?;
        if let Some(heads) = t.unpermute_heads {
            values = unpermute_rows(&values, heads, t.shape[1])?;
        }
        params += values.len();
        let bytes = encode(&values, dtype);
        drop(values);
        writer.write_next(&t.hf_name, &bytes)?;
        bar.inc(bytes.len() as u64);
    }
    bar.finish_and_clear();
    Ok((writer.finish()?, params))
}

fn input_note(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Encodes f32 values as little-endian `dtype` (round to nearest even for the 16-bit types).
pub fn encode(values: &[f32], dtype: DType) -> Vec<u8> {
    const CHUNK: usize = 1 << 16;
    let size = dtype.size();
    let mut out = vec![0u8; values.len() * size];
    out.par_chunks_mut(CHUNK * size).zip(values.par_chunks(CHUNK)).for_each(|(out, values)| {
        let out = out.chunks_exact_mut(size);
        match dtype {
            DType::F32 => out.zip(values).for_each(|(o, v)| o.copy_from_slice(&v.to_le_bytes())),
            DType::F16 => out.zip(values).for_each(|(o, v)| o.copy_from_slice(&f16::from_f32(*v).to_le_bytes())),
            DType::BF16 => out.zip(values).for_each(|(o, v)| o.copy_from_slice(&bf16::from_f32(*v).to_le_bytes())),
        }
    });
    out
}

/// A safetensors file written one tensor at a time: the header (names, shapes, offsets) is
/// computed and written up front, then each tensor's bytes follow in the same order. The file is
/// written under a temporary name and renamed when complete.
pub struct SafetensorsStream {
    tmp: PathBuf,
    path: PathBuf,
    out: BufWriter<File>,
    /// (name, bytes) still to come, in order.
    pending: std::collections::VecDeque<(String, usize)>,
    written: u64,
}

impl SafetensorsStream {
    pub fn create(path: &Path, dtype: DType, tensors: &[(String, Vec<usize>)], source: String) -> Result<Self> {
        let mut header = serde_json::Map::new();
        let mut offset = 0usize;
        let mut pending = std::collections::VecDeque::new();
        for (name, shape) in tensors {
            let n = shape.iter().product::<usize>() * dtype.size();
            let entry =
                json!({"dtype": dtype.safetensors_name(), "shape": shape, "data_offsets": [offset, offset + n]});
            if header.insert(name.clone(), entry).is_some() {
                return Err(Error::Invalid(format!("tensor `{name}` is listed twice")));
            }
            pending.push_back((name.clone(), n));
            offset += n;
        }
        header.insert("__metadata__".into(), json!({"format": "pt", "source": source}));
        let mut text = Value::Object(header).to_string().into_bytes();
        // Pad so the data section starts 8-byte aligned, as the safetensors writers do.
        text.resize(text.len().div_ceil(8) * 8, b' ');
        let tmp = path.with_extension("safetensors.partial");
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let io = |e| Error::io(&tmp, e);
        out.write_all(&(text.len() as u64).to_le_bytes()).map_err(io)?;
        out.write_all(&text).map_err(io)?;
        let written = 8 + text.len() as u64;
        Ok(SafetensorsStream { tmp: tmp.clone(), path: path.to_path_buf(), out, pending, written })
    }

    /// Appends the next tensor; its name and size must match the header's order.
    pub fn write_next(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        match self.pending.pop_front() {
            Some((want, n)) if want == name && n == bytes.len() => {}
            Some((want, n)) => {
                return Err(Error::Invalid(format!(
                    "safetensors stream expected `{want}` ({n} bytes), got `{name}` ({} bytes)",
                    bytes.len()
                )))
            }
            None => return Err(Error::Invalid(format!("safetensors stream: `{name}` is not in the header"))),
        }
        self.out.write_all(bytes).map_err(|e| Error::io(&self.tmp, e))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Flushes, checks every tensor was written, and moves the file into place. Returns its size.
    pub fn finish(mut self) -> Result<u64> {
        if let Some((name, _)) = self.pending.front() {
            return Err(Error::Invalid(format!("safetensors stream: `{name}` was never written")));
        }
        self.out.flush().map_err(|e| Error::io(&self.tmp, e))?;
        self.out.get_ref().sync_all().map_err(|e| Error::io(&self.tmp, e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_safetensors_load_back() {
        let dir = std::env::temp_dir().join(format!("rooflab-import-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.safetensors");
        let a: Vec<f32> = (0..6).map(|i| i as f32 * 0.37 - 1.0).collect();
        let b: Vec<f32> = (0..5).map(|i| 3.0 - i as f32 * 1.1).collect();
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let entries = vec![("b.weight".to_string(), vec![5]), ("a.weight".to_string(), vec![2, 3])];
            let mut w = SafetensorsStream::create(&path, dtype, &entries, "t.gguf".into()).unwrap();
            assert!(w.write_next("a.weight", &encode(&a, dtype)).is_err(), "out of order must fail");
            drop(w);
            let mut w2 = SafetensorsStream::create(&path, dtype, &entries, "t.gguf".into()).unwrap();
            w2.write_next("b.weight", &encode(&b, dtype)).unwrap();
            w2.write_next("a.weight", &encode(&a, dtype)).unwrap();
            let n = w2.finish().unwrap();
            assert_eq!(n, std::fs::metadata(&path).unwrap().len());
            let ck = Checkpoint::open(&dir).unwrap();
            let (ta, tb) = (ck.get("a.weight").unwrap(), ck.get("b.weight").unwrap());
            assert_eq!((ta.shape.clone(), ta.dtype), (vec![2, 3], dtype));
            let tol = if dtype == DType::F32 { 0.0 } else { 1e-2 };
            for (x, y) in ta.to_f32_vec().iter().zip(&a).chain(tb.to_f32_vec().iter().zip(&b)) {
                assert!((x - y).abs() <= tol * y.abs().max(1.0), "{dtype:?}: {x} vs {y}");
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn unfinished_stream_is_an_error() {
        let dir = std::env::temp_dir().join(format!("rooflab-import-unit2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.safetensors");
        let w = SafetensorsStream::create(&path, DType::F32, &[("x".into(), vec![2])], String::new()).unwrap();
        assert!(w.finish().unwrap_err().to_string().contains("`x` was never written"));
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn floats_print_like_the_hf_config() {
        assert_eq!(f32_json(9.999999747378752e-6), json!(1e-5));
        assert_eq!(f32_json(100000.0), json!(100000.0));
    }
}
