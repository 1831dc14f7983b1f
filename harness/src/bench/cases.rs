//! What each suite measures: its shapes (from the models papers use) and, per shape, the FLOPs and the
//! minimum bytes (each input read once, each output written once) that turn a time into GB/s and TFLOP/s.
//!
//! The same lists go to the PyTorch peer scripts as JSON ([`shapes_json`]), so both sides time the same work.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};
use serde_json::{json, Map, Value};

use crate::report::model::Failure;

/// A benchmark suite (`rooflab bench --suite NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Suite {
    /// Prefill flash attention, TFLOP/s against sequence length.
    Attention,
    /// Decode attention over the (paged) KV cache, GB/s against context length.
    Decode,
    /// bf16 and fused-dequant GEMV / skinny GEMM, GB/s against matrix size.
    Gemv,
    /// Speculative-decoding verification.
    Spec,
    /// Whole-model generation: time per token, tokens/s.
    E2e,
}

impl Suite {
    /// Every suite, in the order `--suite all` runs them and the report shows them.
    pub const ALL: [Suite; 5] = [Suite::Attention, Suite::Decode, Suite::Gemv, Suite::Spec, Suite::E2e];

    pub fn name(self) -> &'static str {
        match self {
            Suite::Attention => "attention",
            Suite::Decode => "decode",
            Suite::Gemv => "gemv",
            Suite::Spec => "spec",
            Suite::E2e => "e2e",
        }
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Suite {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Suite::ALL.into_iter().find(|suite| suite.name() == s.trim()).ok_or_else(|| {
            anyhow::anyhow!("unknown suite {s:?}: expected one of {}, or all", Suite::ALL.map(|s| s.name()).join(", "))
        })
    }
}

/// Parses `--suite`: `all`, one name, or a comma-separated list (order kept, duplicates dropped).
pub fn parse_suites(arg: &str) -> Result<Vec<Suite>> {
    if arg.trim() == "all" {
        return Ok(Suite::ALL.to_vec());
    }
    let mut suites = Vec::new();
    for part in arg.split(',').filter(|p| !p.trim().is_empty()) {
        let suite: Suite = part.parse()?;
        if !suites.contains(&suite) {
            suites.push(suite);
        }
    }
    if suites.is_empty() {
        bail!("--suite is empty: expected attention, decode, gemv, spec, e2e or all");
    }
    Ok(suites)
}

/// FLOPs and minimum bytes of one shape: what turns a time into TFLOP/s and GB/s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Work {
    pub flops: f64,
    pub bytes: f64,
}

/// One value in a shape: a size or a bare flag such as `causal`.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Int(u64),
    Text(String),
    Flag,
}

/// One shape of one kernel: what the GPU side launches and what the peers time.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub suite: Suite,
    /// Operation name shared by rooflab's kernel, its naive baseline and the peers.
    pub kernel: String,
    pub dtype: String,
    /// Ordered parameters; [`Case::shape`] renders them as `key=value` pairs.
    pub params: Vec<(String, Param)>,
    pub work: Work,
}

impl Case {
    /// The run's record that `variant` (`*`: every implementation) of this case could not be measured.
    pub fn failure(&self, variant: &str, error: String) -> Failure {
        Failure {
            suite: self.suite.name().to_string(),
            kernel: self.kernel.clone(),
            dtype: self.dtype.clone(),
            variant: variant.to_string(),
            shape: self.shape(),
            // One line: the report puts it in a table cell.
            error: error.split_whitespace().collect::<Vec<_>>().join(" "),
        }
    }

    /// The shape string of summary.csv: `B=1 H=32 KVH=8 S=4096 D=128 causal`.
    pub fn shape(&self) -> String {
        let parts: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| match v {
                Param::Int(n) => format!("{k}={n}"),
                Param::Text(t) => format!("{k}={t}"),
                Param::Flag => k.clone(),
            })
            .collect();
        parts.join(" ")
    }

    /// A size parameter, for the GPU side's launch code.
    pub fn int(&self, key: &str) -> Option<u64> {
        self.params.iter().find_map(|(k, v)| match v {
            Param::Int(n) if k == key => Some(*n),
            _ => None,
        })
    }

    /// Whether a bare flag (e.g. `causal`) is set.
    pub fn flag(&self, key: &str) -> bool {
        self.params.iter().any(|(k, v)| k == key && *v == Param::Flag)
    }

    fn to_json(&self) -> Value {
        let mut params = Map::new();
        for (k, v) in &self.params {
            let value = match v {
                Param::Int(n) => json!(n),
                Param::Text(t) => json!(t),
                Param::Flag => json!(true),
            };
            params.insert(k.clone(), value);
        }
        json!({ "kernel": self.kernel, "shape": self.shape(), "dtype": self.dtype, "params": params })
    }
}

fn ints(pairs: &[(&str, u64)]) -> Vec<(String, Param)> {
    pairs.iter().map(|(k, v)| (k.to_string(), Param::Int(*v))).collect()
}

const BF16: f64 = 2.0;

/// Prefill attention; FLOPs 4·B·H·S²·D, halved when causal; bytes Q, K, V read and O written once.
pub fn attention_prefill(b: u64, h: u64, kvh: u64, s: u64, d: u64, causal: bool) -> Case {
    let (bf, hf, kvf, sf, df) = (b as f64, h as f64, kvh as f64, s as f64, d as f64);
    let flops = 4.0 * bf * hf * sf * sf * df / if causal { 2.0 } else { 1.0 };
    let bytes = BF16 * bf * sf * df * (2.0 * hf + 2.0 * kvf);
    let mut params = ints(&[("B", b), ("H", h), ("KVH", kvh), ("S", s), ("D", d)]);
    if causal {
        params.push(("causal".to_string(), Param::Flag));
    }
    Case {
        suite: Suite::Attention,
        kernel: "attention_prefill".into(),
        dtype: "bf16".into(),
        params,
        work: Work { flops, bytes },
    }
}

/// The FlashAttention papers' benchmark: batch x seqlen = 16k tokens, heads x head_dim = 2048,
/// seqlen 512 to 16k, head_dim 64 and 128, causal and not (multi-head: KVH = H).
pub fn flash_attention_paper_shapes() -> Vec<Case> {
    let mut out = Vec::new();
    for d in [64u64, 128] {
        for causal in [false, true] {
            for s in [512u64, 1024, 2048, 4096, 8192, 16384] {
                out.push(attention_prefill(16384 / s, 2048 / d, 2048 / d, s, d, causal));
            }
        }
    }
    out
}

/// Decode attention, one query token per sequence over L cached tokens; K and V read once per KV head.
pub fn attention_decode(b: u64, h: u64, kvh: u64, l: u64, d: u64) -> Case {
    let (bf, hf, kvf, lf, df) = (b as f64, h as f64, kvh as f64, l as f64, d as f64);
    let flops = 4.0 * bf * hf * lf * df;
    let bytes = BF16 * (2.0 * bf * lf * kvf * df + 2.0 * bf * hf * df);
    Case {
        suite: Suite::Decode,
        kernel: "attention_decode".into(),
        dtype: "bf16".into(),
        params: ints(&[("B", b), ("H", h), ("KVH", kvh), ("L", l), ("D", d)]),
        work: Work { flops, bytes },
    }
}

/// Weight formats the GEMV suite measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    Bf16,
    /// int8 per output channel, one bf16 scale per row.
    Int8,
    /// int4 group-wise (group 128), bf16 scale and zero per group: the layout tinygemm uses.
    Int4,
}

/// y[M,N] = x[M,K]·W[N,K]ᵀ; bytes are the weights in their stored format, scales/zeros, x and y.
pub fn gemv(m: u64, n: u64, k: u64, format: WeightFormat) -> Case {
    let (mf, nf, kf) = (m as f64, n as f64, k as f64);
    let activations = BF16 * (mf * kf + mf * nf);
    let (dtype, weights, params) = match format {
        WeightFormat::Bf16 => ("bf16", BF16 * nf * kf, ints(&[("M", m), ("N", n), ("K", k)])),
        WeightFormat::Int8 => ("int8", nf * kf + BF16 * nf, ints(&[("M", m), ("N", n), ("K", k)])),
        WeightFormat::Int4 => {
            let group = 128u64;
            let groups = nf * (kf / group as f64).ceil();
            ("int4", nf * kf / 2.0 + 2.0 * BF16 * groups, ints(&[("M", m), ("N", n), ("K", k), ("G", group)]))
        }
    };
    Case {
        suite: Suite::Gemv,
        kernel: "gemv".into(),
        dtype: dtype.into(),
        params,
        work: Work { flops: 2.0 * mf * nf * kf, bytes: weights + activations },
    }
}

/// Speculative verification of `draft` tokens against the target's f32 logits over a `vocab`: the
/// (draft + 1) logit rows are read once; the few FLOPs per logit are not counted (it is all bandwidth).
pub fn spec_verify(b: u64, draft: u64, vocab: u64) -> Case {
    let bytes = 4.0 * (b * (draft + 1) * vocab) as f64 + 4.0 * (b * draft) as f64;
    Case {
        suite: Suite::Spec,
        kernel: "spec_verify".into(),
        dtype: "f32".into(),
        params: ints(&[("B", b), ("draft", draft), ("V", vocab)]),
        work: Work { flops: 0.0, bytes },
    }
}

/// Prompt and generation lengths of the end-to-end suite.
pub const E2E_PROMPT: u64 = 32;
pub const E2E_GEN: u64 = 64;
pub const E2E_GEN_QUICK: u64 = 16;

/// End-to-end cases for one model: `decode_step` (time per generated token; its floor is reading every
/// weight once) and `prefill` (time to first token). `model` is the model folder's name, which is what
/// peers_e2e.py writes too.
pub fn e2e_cases(model: &str, weight_bytes: u64, parameters: u64, quick: bool) -> Vec<Case> {
    let gen = if quick { E2E_GEN_QUICK } else { E2E_GEN };
    let params = |_: ()| {
        let mut p = vec![("model".to_string(), Param::Text(model.to_string()))];
        p.extend(ints(&[("B", 1), ("prompt", E2E_PROMPT), ("gen", gen)]));
        p
    };
    let w = weight_bytes as f64;
    let n = parameters as f64;
    vec![
        Case {
            suite: Suite::E2e,
            kernel: "decode_step".into(),
            dtype: "bf16".into(),
            params: params(()),
            work: Work { flops: 2.0 * n, bytes: w },
        },
        Case {
            suite: Suite::E2e,
            kernel: "prefill".into(),
            dtype: "bf16".into(),
            params: params(()),
            work: Work { flops: 2.0 * n * E2E_PROMPT as f64, bytes: w },
        },
    ]
}

/// The shapes of a suite. `quick` keeps a few representative ones, what a device session that has minutes
/// must measure: the shapes the kernel issues are accepted on (prefill at S >= 2048 up to 16k, decode at a
/// short and a long context) and every kernel once (each GEMV weight format, and the skinny-GEMM path).
/// E2e cases depend on the model and come from [`e2e_cases`]; here they are empty.
pub fn cases(suite: Suite, quick: bool) -> Vec<Case> {
    match suite {
        Suite::Attention => {
            let lengths: &[u64] =
                if quick { &[1024, 2048, 4096, 16384] } else { &[512, 1024, 2048, 4096, 8192, 16384, 32768] };
            let mut out: Vec<Case> = lengths.iter().map(|&s| attention_prefill(1, 32, 8, s, 128, true)).collect();
            if !quick {
                // Llama-2-7B style multi-head attention, and a non-causal (encoder-style) pass.
                out.extend([1024, 4096, 16384].iter().map(|&s| attention_prefill(1, 32, 32, s, 128, true)));
                out.extend([1024, 4096, 16384].iter().map(|&s| attention_prefill(1, 32, 8, s, 128, false)));
                out.extend(flash_attention_paper_shapes());
            }
            out
        }
        Suite::Decode => {
            if quick {
                return vec![attention_decode(1, 32, 8, 4096, 128), attention_decode(1, 32, 8, 32768, 128)];
            }
            let mut out = Vec::new();
            for (b, lengths) in [
                (1u64, &[1024u64, 2048, 4096, 8192, 16384, 32768][..]),
                (8, &[1024, 4096, 16384][..]),
                (32, &[1024, 4096, 16384][..]),
            ] {
                out.extend(lengths.iter().map(|&l| attention_decode(b, 32, 8, l, 128)));
            }
            out
        }
        Suite::Gemv => {
            // (N, K): Llama-3-8B o_proj, gate/up, down, lm_head; Llama-70B gate/up (per the DESIGN facts).
            let quick_shapes: &[(u64, u64)] = &[(4096, 4096), (14336, 4096)];
            let full_shapes: &[(u64, u64)] =
                &[(4096, 4096), (14336, 4096), (4096, 14336), (28672, 8192), (128256, 4096)];
            let shapes = if quick { quick_shapes } else { full_shapes };
            let mut out = Vec::new();
            for format in [WeightFormat::Bf16, WeightFormat::Int8, WeightFormat::Int4] {
                out.extend(shapes.iter().map(|&(n, k)| gemv(1, n, k, format)));
            }
            // Skinny GEMM: M barely matters while the weights dominate the bytes.
            let (ms, skinny): (&[u64], &[(u64, u64)]) =
                if quick { (&[16], &[(14336, 4096)]) } else { (&[4, 16], &[(14336, 4096), (4096, 14336)]) };
            for &m in ms {
                out.extend(skinny.iter().map(|&(n, k)| gemv(m, n, k, WeightFormat::Bf16)));
            }
            out
        }
        Suite::Spec => {
            let drafts: &[u64] = if quick { &[4] } else { &[1, 2, 4, 8] };
            let vocabs: &[u64] = if quick { &[128256] } else { &[49152, 128256] };
            vocabs.iter().flat_map(|&v| drafts.iter().map(move |&k| spec_verify(1, k, v))).collect()
        }
        Suite::E2e => Vec::new(),
    }
}

/// The JSON the peer scripts read (`harness/peers/shapes/<suite>.json`, or `<run>/shapes/<suite>.json`).
///
/// Each case carries the exact shape string, so peer rows match rooflab's rows by equality. For e2e the
/// shape holds a `{model}` placeholder that peers_e2e.py fills with the model folder's name.
pub fn shapes_json(suite: Suite, quick: bool) -> String {
    let cases: Vec<Value> = if suite == Suite::E2e {
        e2e_cases("{model}", 0, 0, quick).iter().map(|c| c.to_json()).collect()
    } else {
        cases(suite, quick).iter().map(|c| c.to_json()).collect()
    };
    let doc = json!({
        "suite": suite.name(),
        "quick": quick,
        "generated_by": "rooflab (harness/src/bench/cases.rs); refresh with ROOFLAB_BLESS=1 cargo test -p rooflab-harness --lib shapes",
        "cases": cases,
    });
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_parse_and_reject_unknown_names() {
        assert_eq!(parse_suites("all").unwrap(), Suite::ALL.to_vec());
        assert_eq!(parse_suites("gemv,decode,gemv").unwrap(), vec![Suite::Gemv, Suite::Decode]);
        let err = parse_suites("attention,mlp").unwrap_err().to_string();
        assert!(err.contains("\"mlp\"") && err.contains("all"), "{err}");
        assert!(parse_suites(" , ").is_err());
    }

    #[test]
    fn work_counts_follow_the_design_rules() {
        let c = attention_prefill(1, 32, 8, 4096, 128, true);
        assert_eq!(c.shape(), "B=1 H=32 KVH=8 S=4096 D=128 causal");
        assert_eq!(c.work.flops, 4.0 * 32.0 * 4096.0 * 4096.0 * 128.0 / 2.0);
        assert!(c.flag("causal") && c.int("S") == Some(4096));
        // GQA decode reads K and V once per KV head: 32k tokens x 8 heads x 128 x 2 (K,V) x 2 bytes.
        let d = attention_decode(1, 32, 8, 32768, 128);
        assert_eq!(d.work.bytes, 2.0 * (2.0 * 32768.0 * 8.0 * 128.0 + 2.0 * 32.0 * 128.0));
        let g = gemv(1, 14336, 4096, WeightFormat::Bf16);
        assert_eq!(g.work.bytes, 2.0 * 14336.0 * 4096.0 + 2.0 * (4096.0 + 14336.0));
        let q = gemv(1, 14336, 4096, WeightFormat::Int4);
        assert_eq!(q.shape(), "M=1 N=14336 K=4096 G=128");
        let ratio = g.work.bytes / q.work.bytes;
        assert!(ratio > 3.5 && ratio < 4.0, "int4 should move about 3.9x fewer bytes, got {ratio}");
    }

    #[test]
    fn quick_lists_are_shorter_and_shapes_are_unique() {
        for suite in Suite::ALL {
            let full = cases(suite, false);
            let quick = cases(suite, true);
            assert!(quick.len() <= full.len());
            let mut keys: Vec<(String, String, String)> =
                full.iter().map(|c| (c.kernel.clone(), c.shape(), c.dtype.clone())).collect();
            keys.sort();
            keys.dedup();
            assert_eq!(keys.len(), full.len(), "{suite} has a duplicate shape");
        }
        assert_eq!(
            e2e_cases("SmolLM2-135M-Instruct", 269_000_000, 134_500_000, false)[0].shape(),
            "model=SmolLM2-135M-Instruct B=1 prompt=32 gen=64"
        );
    }

    #[test]
    fn attention_suite_has_the_flash_attention_paper_and_llama3_shapes() {
        let paper = flash_attention_paper_shapes();
        assert_eq!(paper.len(), 24);
        for c in &paper {
            let (b, h, s, d) = (c.int("B").unwrap(), c.int("H").unwrap(), c.int("S").unwrap(), c.int("D").unwrap());
            assert_eq!((b * s, h * d, c.int("KVH")), (16384, 2048, Some(h)), "{}", c.shape());
        }
        let full = cases(Suite::Attention, false);
        assert!(paper.iter().all(|c| full.contains(c)));
        for s in [512, 1024, 2048, 4096, 8192, 16384] {
            assert!(full.contains(&attention_prefill(1, 32, 8, s, 128, true)), "Llama-3-8B S={s}");
        }
    }

    /// The committed shape files the peer scripts read by default must match the Rust lists.
    #[test]
    fn committed_peer_shapes_match() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/shapes");
        let bless = std::env::var_os("ROOFLAB_BLESS").is_some();
        for suite in [Suite::Attention, Suite::Decode, Suite::Gemv, Suite::E2e] {
            let path = dir.join(format!("{}.json", suite.name()));
            let expected = shapes_json(suite, false);
            if bless {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &expected).unwrap();
            }
            let found = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(found == expected, "{} is stale: rerun with ROOFLAB_BLESS=1", path.display());
        }
    }
}
