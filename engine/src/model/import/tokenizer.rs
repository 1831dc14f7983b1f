//! Rebuilds an HF `tokenizer.json` from a GGUF's `tokenizer.ggml.*` metadata.
//!
//! Two vocabulary kinds are handled:
//! - `gpt2`: byte-level BPE. Tokens are already in byte-level form (`Ġthe`) and the merges are
//!   stored as `"left right"`; the pre-tokenizer depends on `tokenizer.ggml.pre` (see
//!   [`pre_tokenizer`]), the decoder is ByteLevel.
//! - `llama`: SentencePiece-style BPE (`▁` for spaces, `<0xNN>` byte tokens for byte fallback).
//!   When the file has no merges they are derived from the token scores the way HF's
//!   `SentencePieceExtractor` does, which reproduces llama.cpp's highest-score-first merging.
//!
//! Tokens of type control (3) and user-defined (4) become added special tokens, matched before
//! the model runs. A BOS (or EOS) token is added only when `tokenizer.ggml.add_bos_token`
//! (`add_eos_token`) says so; when the key is absent the llama.cpp default for the vocabulary
//! kind applies (BOS for `llama`, nothing for `gpt2`).

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

use crate::model::gguf::{GgufFile, GgufValue};
use crate::{Error, Result};

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TYPE_NORMAL: i64 = 1;
const TYPE_UNKNOWN: i64 = 2;
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;
const TYPE_BYTE: i64 = 6;

/// Llama 3's split regex (tokenizer.json `Split` pattern, applied before a regex-free ByteLevel).
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// What the importer needs besides the JSON: the special tokens' text for tokenizer_config.json.
#[derive(Debug, Clone)]
pub struct BuiltTokenizer {
    pub json: Value,
    pub vocab_size: usize,
    pub bos: Option<(u32, String)>,
    pub eos: Option<(u32, String)>,
    /// EOS plus end-of-turn tokens (`eot`, `eom`) when the file names them: generation stops on any.
    pub stop_ids: Vec<u32>,
    pub unk: Option<String>,
    pub pad: Option<String>,
    pub add_bos: bool,
    pub add_eos: bool,
    /// Every byte sequence has an encoding (byte-level BPE, or SentencePiece with byte fallback),
    /// so any text must survive an encode/decode round trip.
    pub byte_complete: bool,
}

/// The vocabulary as stored in the GGUF.
struct Vocab {
    tokens: Vec<String>,
    types: Vec<i64>,
    scores: Option<Vec<f64>>,
    merges: Option<Vec<String>>,
}

pub fn build(gguf: &GgufFile) -> Result<BuiltTokenizer> {
    let kind = gguf.opt_str("tokenizer.ggml.model")?.ok_or_else(|| {
        Error::Unsupported(format!("{}: no tokenizer.ggml.model, the GGUF carries no vocabulary", gguf.path.display()))
    })?;
    let tokens = gguf
        .opt_array("tokenizer.ggml.tokens", "a string", |v| v.as_str().map(String::from))?
        .ok_or_else(|| Error::bad_file(&gguf.path, "metadata `tokenizer.ggml.tokens` is missing"))?;
    let n = tokens.len();
    let types = gguf.opt_array("tokenizer.ggml.token_type", "an integer", GgufValue::as_i64)?.unwrap_or(vec![1; n]);
    let scores = gguf.opt_array("tokenizer.ggml.scores", "a number", GgufValue::as_f64)?;
    let merges = gguf.opt_array("tokenizer.ggml.merges", "a string", |v| v.as_str().map(String::from))?;
    if types.len() != n || scores.as_ref().is_some_and(|s| s.len() != n) {
        return Err(Error::bad_file(
            &gguf.path,
            format!("tokenizer arrays disagree: {n} tokens, {} types", types.len()),
        ));
    }
    let vocab = Vocab { tokens, types, scores, merges };

    let id = |key: &str| -> Result<Option<u32>> {
        match gguf.opt_u64(key)? {
            Some(i) if (i as usize) < n => Ok(Some(i as u32)),
            Some(i) => Err(Error::bad_file(&gguf.path, format!("metadata `{key}` = {i} is outside the {n} tokens"))),
            None => Ok(None),
        }
    };
    let named = |i: Option<u32>| i.map(|i| (i, vocab.tokens[i as usize].clone()));
    let bos = named(id("tokenizer.ggml.bos_token_id")?);
    let eos = named(id("tokenizer.ggml.eos_token_id")?);
    let unk = named(id("tokenizer.ggml.unknown_token_id")?);
    let pad = named(id("tokenizer.ggml.padding_token_id")?);
    let mut stop_ids: Vec<u32> = eos.iter().map(|e| e.0).collect();
    for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
        if let Some(i) = id(key)?.filter(|i| !stop_ids.contains(i)) {
            stop_ids.push(i);
        }
    }

    let spm = match kind {
        "gpt2" => false,
        "llama" => true,
        other => {
            let path = gguf.path.display();
            let supported = "`gpt2` byte-level BPE and `llama` SentencePiece BPE";
            return Err(Error::Unsupported(format!(
                "{path}: tokenizer.ggml.model `{other}` (rooflab imports {supported})"
            )));
        }
    };
    let add_bos = gguf.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(spm);
    let add_eos = gguf.opt_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
    if (add_bos && bos.is_none()) || (add_eos && eos.is_none()) {
        return Err(Error::bad_file(&gguf.path, "the tokenizer adds BOS/EOS but names no BOS/EOS token id"));
    }

    let (model, normalizer, pre_tokenizer, decoder) = if spm {
        let add_space_prefix = gguf.opt_bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
        spm_parts(&vocab, unk.as_ref().map(|u| u.1.as_str()), add_space_prefix)?
    } else {
        let pre = gguf.opt_str("tokenizer.ggml.pre")?.unwrap_or("gpt2");
        let (pre_tokenizer, ignore_merges) = pre_tokenizer(pre).ok_or_else(|| {
            Error::Unsupported(format!(
                "{}: tokenizer.ggml.pre `{pre}` has no known pre-tokenizer (rooflab maps gpt2, smollm, starcoder, \
                 refact, command-r, codeshell, exaone, llama-bpe and llama3)",
                gguf.path.display()
            ))
        })?;
        (
            bpe_model(&vocab, byte_level_merges(&vocab)?, None, false, ignore_merges),
            Value::Null,
            pre_tokenizer,
            byte_level(true),
        )
    };

    let added: Vec<Value> = (0..n)
        .filter(|&i| {
            matches!(vocab.types[i], TYPE_CONTROL | TYPE_USER_DEFINED) || (spm && vocab.types[i] == TYPE_UNKNOWN)
        })
        .map(|i| {
            json!({"id": i, "content": vocab.tokens[i], "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": true})
        })
        .collect();

    let post_processor =
        post_processor(spm, add_bos.then(|| bos.clone()).flatten(), add_eos.then(|| eos.clone()).flatten());
    let json = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": decoder,
        "model": model,
    });
    Ok(BuiltTokenizer {
        json,
        vocab_size: n,
        bos,
        eos,
        stop_ids,
        unk: unk.map(|u| u.1),
        pad: pad.map(|p| p.1),
        add_bos,
        add_eos,
        byte_complete: !spm || vocab.types.contains(&TYPE_BYTE),
    })
}

fn byte_level(use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
}

/// The pre-tokenizer HF uses for a llama.cpp `tokenizer.ggml.pre` name, and whether the BPE
/// model ignores merges for words already in the vocabulary (Llama 3 does). The names sharing one
/// entry share one split regex in llama.cpp's `llama-vocab.cpp`.
pub fn pre_tokenizer(pre: &str) -> Option<(Value, bool)> {
    match pre {
        "gpt2" | "gpt-2" | "mpt" | "olmo" | "jais" => Some((byte_level(true), false)),
        // llama.cpp splits `\p{N}` first, then applies the GPT-2 regex: HF writes this as
        // individual digits followed by ByteLevel with its built-in (GPT-2) regex.
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" => Some((
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level(true),
            ]}),
            false,
        )),
        "llama3" | "llama-v3" | "llama-bpe" => Some((
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": false},
                byte_level(false),
            ]}),
            true,
        )),
        _ => None,
    }
}

fn post_processor(spm: bool, bos: Option<(u32, String)>, eos: Option<(u32, String)>) -> Value {
    if bos.is_none() && eos.is_none() {
        return if spm {
            Value::Null
        } else {
            json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true})
        };
    }
    let special = |t: &(u32, String)| json!({"SpecialToken": {"id": t.1, "type_id": 0}});
    let seq = |name: &str, type_id: u32| json!({"Sequence": {"id": name, "type_id": type_id}});
    let mut single = vec![];
    let mut pair = vec![];
    let mut specials = serde_json::Map::new();
    for (side, type_id) in [("A", 0), ("B", 1)] {
        let list = if side == "A" { &mut single } else { &mut pair };
        if let Some(b) = &bos {
            list.push(special(b));
        }
        list.push(seq(side, type_id));
        if let Some(e) = &eos {
            list.push(special(e));
        }
    }
    let pair: Vec<Value> = single.iter().cloned().chain(pair).collect();
    for t in bos.iter().chain(eos.iter()) {
        specials.insert(t.1.clone(), json!({"id": t.1, "ids": [t.0], "tokens": [t.1]}));
    }
    json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
}

/// The BPE model section. Merges whose halves contain no space are written `"left right"` (the
/// form every tokenizers version reads), the others as `[left, right]` pairs.
fn bpe_model(
    vocab: &Vocab,
    merges: Vec<(String, String)>,
    unk: Option<&str>,
    byte_fallback: bool,
    ignore_merges: bool,
) -> Value {
    let mut map = serde_json::Map::new();
    for (i, t) in vocab.tokens.iter().enumerate() {
        // A repeated token string keeps its first id; the later id cannot be produced by encoding.
        map.entry(t.clone()).or_insert(json!(i));
    }
    let merges: Vec<Value> = merges
        .into_iter()
        .map(|(a, b)| if a.contains(' ') || b.contains(' ') { json!([a, b]) } else { json!(format!("{a} {b}")) })
        .collect();
    json!({
        "type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
        "end_of_word_suffix": null, "fuse_unk": byte_fallback, "byte_fallback": byte_fallback,
        "ignore_merges": ignore_merges, "vocab": map, "merges": merges,
    })
}

/// Splits each stored merge `"left right"` at the space that leaves two vocabulary tokens.
fn byte_level_merges(vocab: &Vocab) -> Result<Vec<(String, String)>> {
    let merges = vocab.merges.as_deref().ok_or_else(|| Error::Tokenizer("gpt2 vocabulary without merges".into()))?;
    let known: HashSet<&str> = vocab.tokens.iter().map(String::as_str).collect();
    merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            m.match_indices(' ')
                .map(|(at, _)| (&m[..at], &m[at + 1..]))
                .find(|(a, b)| known.contains(a) && known.contains(b))
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| Error::Tokenizer(format!("merge #{i} `{m}` does not join two vocabulary tokens")))
        })
        .collect()
}

/// Model, normalizer, pre-tokenizer and decoder of a SentencePiece-style BPE vocabulary.
fn spm_parts(vocab: &Vocab, unk: Option<&str>, add_space_prefix: bool) -> Result<(Value, Value, Value, Value)> {
    let merges = match &vocab.merges {
        Some(_) => byte_level_merges(vocab)?,
        None => {
            let scores = vocab.scores.as_deref().ok_or_else(|| {
                Error::Tokenizer("llama vocabulary has neither merges nor scores to derive them from".into())
            })?;
            merges_from_scores(&vocab.tokens, &vocab.types, scores)
        }
    };
    let mut normalizers = vec![];
    if add_space_prefix {
        normalizers.push(json!({"type": "Prepend", "prepend": "▁"}));
    }
    normalizers.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"}));
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if add_space_prefix {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    let has_bytes = vocab.types.contains(&TYPE_BYTE);
    Ok((
        bpe_model(vocab, merges, unk, has_bytes, false),
        json!({"type": "Sequence", "normalizers": normalizers}),
        Value::Null,
        json!({"type": "Sequence", "decoders": decoders}),
    ))
}

/// BPE merges implied by SentencePiece scores: every split of a normal token into two normal
/// tokens is a merge, ranked by the merged token's score (higher first; ties by the halves' ids).
/// Running BPE with these ranks merges the highest-scoring pair first, as llama.cpp does.
pub fn merges_from_scores(tokens: &[String], types: &[i64], scores: &[f64]) -> Vec<(String, String)> {
    let normal: HashMap<&str, usize> =
        tokens.iter().enumerate().filter(|(i, _)| types[*i] == TYPE_NORMAL).map(|(i, t)| (t.as_str(), i)).collect();
    let mut found: Vec<(f64, usize, usize)> = vec![];
    for (i, piece) in tokens.iter().enumerate().filter(|(i, _)| types[*i] == TYPE_NORMAL) {
        let mut local: Vec<(usize, usize)> = piece
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| Some((*normal.get(&piece[..at])?, *normal.get(&piece[at..])?)))
            .collect();
        local.sort_unstable();
        found.extend(local.into_iter().map(|(l, r)| (scores[i], l, r)));
    }
    // Stable sort keeps each piece's splits in id order, as HF does.
    found.sort_by(|a, b| b.0.total_cmp(&a.0));
    found.into_iter().map(|(_, l, r)| (tokens[l].clone(), tokens[r].clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(json: &Value) -> tokenizers::Tokenizer {
        json.to_string().parse().unwrap_or_else(|e| panic!("tokenizer.json does not load: {e}"))
    }

    fn vocab(tokens: &[&str], types: &[i64], merges: Option<&[&str]>, scores: Option<Vec<f64>>) -> Vocab {
        Vocab {
            tokens: tokens.iter().map(|s| s.to_string()).collect(),
            types: types.to_vec(),
            scores,
            merges: merges.map(|m| m.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn spm_merges_follow_scores() {
        let tokens = ["<unk>", "▁", "h", "i", "▁h", "hi", "▁hi"];
        let types = [2, 1, 1, 1, 1, 1, 1];
        // "hi" outranks "▁h", so "▁hi" comes from ▁ + hi, and "▁hi" itself is split both ways.
        let scores = vec![0.0, -1.0, -2.0, -3.0, -5.0, -4.0, -6.0];
        let merges = merges_from_scores(&tokens.map(String::from), &types, &scores);
        let pairs: Vec<(&str, &str)> = merges.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(pairs, [("h", "i"), ("▁", "h"), ("▁", "hi"), ("▁h", "i")]);
    }

    #[test]
    fn spm_tokenizer_encodes_with_space_prefix_and_byte_fallback() {
        let mut tokens = vec!["<unk>", "<s>", "</s>"];
        let bytes: Vec<String> = (0..=255u8).map(|b| format!("<0x{b:02X}>")).collect();
        tokens.extend(bytes.iter().map(String::as_str));
        tokens.extend(["▁", "h", "i", "▁h", "hi", "▁hi"]);
        let mut types = vec![2, 3, 3];
        types.extend([6; 256]);
        types.extend([1; 6]);
        let scores: Vec<f64> = (0..tokens.len()).map(|i| -(i as f64)).collect();
        let v = vocab(&tokens, &types, None, Some(scores));
        let (model, norm, pre, dec) = spm_parts(&v, Some("<unk>"), true).unwrap();
        let bos = Some((1, "<s>".to_string()));
        let json = json!({"version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [{"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false,
                              "normalized": false, "special": true}],
            "normalizer": norm, "pre_tokenizer": pre,
            "post_processor": post_processor(true, bos, None), "decoder": dec, "model": model});
        let t = tok(&json);
        let enc = t.encode("hi hé", true).unwrap();
        let base = 3 + 256;
        // <s> ▁hi ▁h <0xC3> <0xA9>: "é" is not in the vocabulary, so it falls back to its UTF-8 bytes.
        assert_eq!(enc.get_ids(), [1, base as u32 + 5, base as u32 + 3, 3 + 0xC3, 3 + 0xA9]);
        assert_eq!(t.decode(enc.get_ids(), true).unwrap(), "hi hé");
    }

    #[test]
    fn byte_level_merges_split_at_the_right_space() {
        let v = vocab(&["a", "b", "ab", "Ġ", "Ġab"], &[1; 5], Some(&["a b", "Ġ ab"]), None);
        let m = byte_level_merges(&v).unwrap();
        assert_eq!(m, [("a".to_string(), "b".to_string()), ("Ġ".to_string(), "ab".to_string())]);
        let bad = vocab(&["a", "b"], &[1, 1], Some(&["a c"]), None);
        assert!(byte_level_merges(&bad).unwrap_err().to_string().contains("merge #0 `a c`"));
    }

    #[test]
    fn template_post_processor_adds_bos() {
        let p = post_processor(false, Some((1, "<s>".into())), None);
        assert_eq!(p["single"][0]["SpecialToken"]["id"], "<s>");
        assert_eq!(p["special_tokens"]["<s>"]["ids"][0], 1);
        assert_eq!(post_processor(true, None, None), Value::Null);
    }

    #[test]
    fn unknown_pre_tokenizer_is_refused() {
        assert!(pre_tokenizer("smollm").is_some());
        assert!(pre_tokenizer("qwen2").is_none());
    }
}
