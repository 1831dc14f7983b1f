//! Which GGUF tensor becomes which HF tensor, with what shape, and the rotary row permutation
//! llama.cpp applies to Q and K that the importer has to undo.

use serde_json::{json, Value};

use super::Hparams;
use crate::model::gguf::{GgufFile, GgufTensorInfo};
use crate::model::weights::{layer_names, EMBED, FINAL_NORM, LM_HEAD};
use crate::quant::ggml;
use crate::{Error, Result};

/// One tensor to convert: where it comes from, its HF name and row-major shape, and the number of
/// heads whose rows must be un-permuted (Q and K only).
#[derive(Debug, Clone)]
pub struct PlannedTensor<'a> {
    pub src: &'a GgufTensorInfo,
    pub hf_name: String,
    pub shape: Vec<usize>,
    pub unpermute_heads: Option<usize>,
}

/// The conversion plan for a whole file.
pub struct Plan<'a> {
    /// In file order.
    pub tensors: Vec<PlannedTensor<'a>>,
    /// No `output.weight`: the LM head is the embedding table.
    pub tied: bool,
    /// llama3-style rotary scaling recovered from `rope_freqs.weight`, as config.json writes it.
    pub rope_scaling: Option<Value>,
}

/// Maps every tensor of `gguf` to its HF counterpart and checks that nothing is missing, extra,
/// misshapen or in a type the importer cannot decode.
pub fn plan<'a>(gguf: &'a GgufFile, hp: &Hparams) -> Result<Plan<'a>> {
    let path = gguf.path.display();
    let (h, f, v, d) = (hp.hidden, hp.intermediate, hp.vocab, hp.head_dim);
    let mut tensors = Vec::with_capacity(gguf.tensors().len());
    let mut rope_freqs = None;
    for t in gguf.tensors() {
        if t.name == "rope_freqs.weight" {
            rope_freqs = Some(t);
            continue;
        }
        let (hf_name, shape, heads) = match t.name.as_str() {
            "token_embd.weight" => (EMBED.to_string(), vec![v, h], None),
            "output_norm.weight" => (FINAL_NORM.to_string(), vec![h], None),
            "output.weight" => (LM_HEAD.to_string(), vec![v, h], None),
            name => {
                let (layer, part) = parse_block_name(name).filter(|(i, _)| *i < hp.layers).ok_or_else(|| {
                    Error::Unsupported(format!("{path}: tensor `{name}` has no place in a Llama checkpoint"))
                })?;
                let n = layer_names(layer);
                match part {
                    "attn_norm.weight" => (n.attn_norm, vec![h], None),
                    "attn_q.weight" => (n.q, vec![hp.heads * d, h], Some(hp.heads)),
                    "attn_k.weight" => (n.k, vec![hp.kv_heads * d, h], Some(hp.kv_heads)),
                    "attn_v.weight" => (n.v, vec![hp.kv_heads * d, h], None),
                    "attn_output.weight" => (n.o, vec![h, hp.heads * d], None),
                    "ffn_norm.weight" => (n.mlp_norm, vec![h], None),
                    "ffn_gate.weight" => (n.gate, vec![f, h], None),
                    "ffn_up.weight" => (n.up, vec![f, h], None),
                    "ffn_down.weight" => (n.down, vec![h, f], None),
                    _ => {
                        return Err(Error::Unsupported(format!(
                            "{path}: tensor `{name}` has no place in a Llama checkpoint"
                        )))
                    }
                }
            }
        };
        if t.shape() != shape {
            return Err(Error::BadShape { name: format!("{} ({hf_name})", t.name), found: t.shape(), expected: shape });
        }
        if !t.ty.can_dequantize() {
            return Err(Error::Unsupported(format!(
                "{path}: tensor `{}` has type {}, which rooflab cannot dequantise (supported: {})",
                t.name,
                t.ty,
                ggml::DEQUANTIZABLE
            )));
        }
        tensors.push(PlannedTensor { src: t, hf_name, shape, unpermute_heads: heads });
    }

    let tied = gguf.tensor("output.weight").is_none();
    let mut expected = vec!["token_embd.weight".to_string(), "output_norm.weight".to_string()];
    for i in 0..hp.layers {
        for part in
            ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]
        {
            expected.push(format!("blk.{i}.{part}.weight"));
        }
    }
    if let Some(missing) = expected.iter().find(|name| gguf.tensor(name).is_none()) {
        return Err(Error::MissingTensor(format!("{missing} (in {path})")));
    }

    let rope_scaling = match rope_freqs {
        None => None,
        Some(t) => {
            if t.shape() != [d / 2] {
                return Err(Error::BadShape { name: t.name.clone(), found: t.shape(), expected: vec![d / 2] });
            }
            let factors = gguf.dequantize(t)?;
            Some(llama3_scaling_from_factors(&factors, hp.rope_theta, d, hp.original_context).ok_or_else(|| {
                Error::Unsupported(format!(
                    "{path}: rope_freqs.weight does not match llama3 rotary scaling (low/high frequency factors 1/4)"
                ))
            })?)
        }
    };
    Ok(Plan { tensors, tied, rope_scaling })
}

/// `blk.12.attn_q.weight` -> (12, "attn_q.weight").
fn parse_block_name(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    Some((layer.parse().ok()?, part))
}

/// llama.cpp's convert script stores Q and K with the rows of each head reordered so that the
/// two halves of every rotary pair sit next to each other (its `permute`: rows viewed as
/// `[heads, 2, head_dim / 2]` are transposed to `[heads, head_dim / 2, 2]`). HF pairs dimension
/// `i` with `i + head_dim / 2` (rotate-half), so HF row `h*d + j*d/2 + i` is GGUF row
/// `h*d + 2*i + j`. This undoes it for a row-major `[heads * head_dim, cols]` matrix.
pub fn unpermute_rows<T: Copy>(w: &[T], heads: usize, cols: usize) -> Result<Vec<T>> {
    let d = check_heads(w.len(), heads, cols)?;
    let mut out = Vec::with_capacity(w.len());
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..d / 2 {
                let src = (h * d + 2 * i + j) * cols;
                out.extend_from_slice(&w[src..src + cols]);
            }
        }
    }
    Ok(out)
}

/// The convert script's permutation (the inverse of [`unpermute_rows`]); tests and tools that
/// write GGUF files use it.
pub fn permute_rows<T: Copy>(w: &[T], heads: usize, cols: usize) -> Result<Vec<T>> {
    let d = check_heads(w.len(), heads, cols)?;
    let mut out = Vec::with_capacity(w.len());
    for h in 0..heads {
        for i in 0..d / 2 {
            for j in 0..2 {
                let src = (h * d + j * (d / 2) + i) * cols;
                out.extend_from_slice(&w[src..src + cols]);
            }
        }
    }
    Ok(out)
}

/// The head dimension, checked to be a whole, even number of rows per head.
fn check_heads(len: usize, heads: usize, cols: usize) -> Result<usize> {
    let bad = || {
        Error::Invalid(format!(
            "cannot split {len} values of {cols} columns into {heads} heads of an even number of rows"
        ))
    };
    let rows = len.checked_div(cols).filter(|r| r * cols == len).ok_or_else(bad)?;
    let d = rows.checked_div(heads).filter(|d| d * heads == rows && d % 2 == 0).ok_or_else(bad)?;
    Ok(d)
}

/// Recovers HF's llama3 `rope_scaling` from the per-frequency divisors llama.cpp stores in
/// `rope_freqs.weight`. The divisors are `factor` for long wavelengths, 1 for short ones and
/// `1 / ((1 - s) / factor + s)` between; `factor` is their maximum, and the low/high frequency
/// factors are taken as Llama 3.1/3.2's 1 and 4, accepted only if they reproduce every divisor.
pub fn llama3_scaling_from_factors(
    factors: &[f32],
    theta: f64,
    head_dim: usize,
    original: Option<u64>,
) -> Option<Value> {
    let factor = factors.iter().copied().fold(f32::MIN, f32::max) as f64;
    if factors.len() != head_dim / 2 || !factor.is_finite() || factor < 1.0 {
        return None;
    }
    let (low, high) = (1.0f64, 4.0f64);
    let old = original.unwrap_or(8192) as f64;
    let (low_wavelen, high_wavelen) = (old / low, old / high);
    for (i, &got) in factors.iter().enumerate() {
        let freq = 1.0 / theta.powf((2 * i) as f64 / head_dim as f64);
        let wavelen = 2.0 * std::f64::consts::PI / freq;
        let want = if wavelen < high_wavelen {
            1.0
        } else if wavelen > low_wavelen {
            factor
        } else {
            let smooth = (old / wavelen - low) / (high - low);
            1.0 / ((1.0 - smooth) / factor + smooth)
        };
        if (got as f64 - want).abs() > 1e-3 * want {
            return None;
        }
    }
    Some(json!({
        "rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
        "original_max_position_embeddings": old as u64,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_hand_example() {
        // One head of 4 rows, 1 column: HF pairs (0, 2) and (1, 3); GGUF interleaves them.
        let hf = ["a0", "a1", "b0", "b1"];
        let gguf = permute_rows(&hf, 1, 1).unwrap();
        assert_eq!(gguf, ["a0", "b0", "a1", "b1"]);
        assert_eq!(unpermute_rows(&gguf, 1, 1).unwrap(), hf);
        // Two heads of 2 rows and 2 columns: a head of 2 rows has one pair, nothing moves.
        let w: Vec<u32> = (0..8).collect();
        assert_eq!(unpermute_rows(&w, 2, 2).unwrap(), w);
    }

    #[test]
    fn permute_then_unpermute_is_identity() {
        for (heads, d, cols) in [(1, 4, 1), (3, 64, 5), (9, 64, 7), (2, 6, 3), (4, 128, 1)] {
            let w: Vec<u32> = (0..(heads * d * cols) as u32).map(|x| x.wrapping_mul(2654435761)).collect();
            let p = permute_rows(&w, heads, cols).unwrap();
            assert_ne!(p, w, "heads {heads} d {d}");
            assert_eq!(unpermute_rows(&p, heads, cols).unwrap(), w);
            assert_eq!(permute_rows(&unpermute_rows(&w, heads, cols).unwrap(), heads, cols).unwrap(), w);
            // HF rows i and i + d/2 (a rotary pair) are adjacent in GGUF order: GGUF row 2i + j.
            let row = |m: &[u32], r: usize| m[r * cols..(r + 1) * cols].to_vec();
            let last = (heads - 1) * d;
            assert_eq!(row(&p, last + 1), row(&w, last + d / 2));
            assert_eq!(row(&p, last + 2), row(&w, last + 1));
        }
    }

    #[test]
    fn unpermute_rejects_bad_head_counts() {
        let w = [0u8; 12];
        assert!(unpermute_rows(&w, 4, 1).is_err()); // 3 rows per head: odd
        assert!(unpermute_rows(&w, 5, 1).is_err());
        assert!(unpermute_rows(&w, 2, 0).is_err());
    }

    #[test]
    fn recovers_llama3_scaling() {
        let (theta, d) = (500000.0f64, 64);
        let (factor, low, high, old) = (32.0f64, 1.0, 4.0, 8192.0);
        let factors: Vec<f32> = (0..d / 2)
            .map(|i| {
                let freq = 1.0 / theta.powf((2 * i) as f64 / d as f64);
                let wavelen = 2.0 * std::f64::consts::PI / freq;
                if wavelen < old / high {
                    1.0
                } else if wavelen > old / low {
                    factor as f32
                } else {
                    let s = (old / wavelen - low) / (high - low);
                    (1.0 / ((1.0 - s) / factor + s)) as f32
                }
            })
            .collect();
        assert!(factors.iter().any(|&f| f > 1.0 && f < 32.0), "the test should cover the smooth band");
        let v = llama3_scaling_from_factors(&factors, theta, d, None).unwrap();
        assert_eq!(v["factor"], 32.0);
        assert_eq!(v["original_max_position_embeddings"], 8192);
        let mut off = factors.clone();
        off[20] *= 1.1;
        assert!(llama3_scaling_from_factors(&off, theta, d, None).is_none());
    }

    #[test]
    fn block_names_parse() {
        assert_eq!(parse_block_name("blk.12.attn_q.weight"), Some((12, "attn_q.weight")));
        assert_eq!(parse_block_name("blk.x.attn_q.weight"), None);
        assert_eq!(parse_block_name("token_embd.weight"), None);
    }
}
