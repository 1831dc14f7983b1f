//! The generation loop: prefill the prompt, then decode one token at a time until EOS, a stop
//! string, the token budget or the end of the context, streaming text as it settles and timing
//! every step.

use std::time::{Duration, Instant};

use crate::model::{CausalLm, Logits};
use crate::sample::{Sampler, SamplingParams};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation stops when the output text contains one of these; the text ends before it.
    pub stop_strings: Vec<String>,
    /// Token ids that end generation (not included in the text).
    pub eos_ids: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Eos,
    StopString,
    MaxTokens,
    ContextFull,
}

#[derive(Debug, Clone)]
pub struct Generation {
    pub prompt_tokens: usize,
    pub tokens: Vec<u32>,
    pub text: String,
    pub stop: StopReason,
    /// Prompt processing plus the first sampled token.
    pub ttft: Duration,
    /// Time between consecutive output tokens.
    pub inter_token: Vec<Duration>,
}

impl Generation {
    pub fn inter_token_percentile(&self, pct: f64) -> Option<Duration> {
        percentile(&self.inter_token, pct)
    }

    /// Decode throughput (tokens after the first, over the time they took).
    pub fn decode_tokens_per_s(&self) -> Option<f64> {
        let total: Duration = self.inter_token.iter().sum();
        (!self.inter_token.is_empty()).then(|| self.inter_token.len() as f64 / total.as_secs_f64())
    }

    /// Median inter-token time as a fraction of the weight-bandwidth floor: reading every weight
    /// once per token at `bandwidth` bytes/s takes `weight_bytes / bandwidth` seconds.
    pub fn pct_of_bandwidth_floor(&self, weight_bytes: usize, bandwidth: f64) -> Option<f64> {
        let median = self.inter_token_percentile(50.0)?;
        Some(100.0 * (weight_bytes as f64 / bandwidth) / median.as_secs_f64())
    }
}

/// Nearest-rank percentile.
pub fn percentile(samples: &[Duration], pct: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Runs `prompt` through `model` and samples up to `opts.max_new_tokens` tokens, calling
/// `on_text` with each piece of settled text. Text that might be the start of a stop string is
/// held back until it is clear that it is not.
pub fn generate(
    model: &mut dyn CausalLm,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation> {
    let context = model.context_len();
    if prompt.is_empty() {
        return Err(Error::Invalid("the prompt is empty".into()));
    }
    if prompt.len() > context {
        return Err(Error::ContextOverflow { prompt: prompt.len(), new: opts.max_new_tokens, context });
    }
    let mut sampler = Sampler::new(opts.sampling.clone())?;
    let mut stream = tokenizer.stream();
    let mut seen = prompt.to_vec();
    let mut out = Generation {
        prompt_tokens: prompt.len(),
        tokens: vec![],
        text: String::new(),
        stop: StopReason::MaxTokens,
        ttft: Duration::ZERO,
        inter_token: vec![],
    };
    let hold_back = opts.stop_strings.iter().map(|s| s.len()).max().unwrap_or(1).saturating_sub(1);
    let mut pending = String::new();

    let start = Instant::now();
    let mut last = start;
    let mut logits = checked(model.forward(prompt, 0, Logits::Last)?, prompt.len() - 1)?;
    while out.tokens.len() < opts.max_new_tokens {
        let token = sampler.sample(&logits, &seen);
        let now = Instant::now();
        if out.tokens.is_empty() {
            out.ttft = now - start;
        } else {
            out.inter_token.push(now - last);
        }
        last = now;
        if opts.eos_ids.contains(&token) {
            out.stop = StopReason::Eos;
            break;
        }
        out.tokens.push(token);
        seen.push(token);
        pending.push_str(&stream.push(token)?);
        if let Some(cut) = opts.stop_strings.iter().filter_map(|s| pending.find(s.as_str())).min() {
            pending.truncate(cut);
            out.stop = StopReason::StopString;
            break;
        }
        let mut settled = pending.len().saturating_sub(hold_back);
        while !pending.is_char_boundary(settled) {
            settled -= 1;
        }
        if settled > 0 {
            on_text(&pending[..settled]);
            out.text.push_str(&pending[..settled]);
            pending.drain(..settled);
        }
        if out.tokens.len() == opts.max_new_tokens {
            break;
        }
        let position = prompt.len() + out.tokens.len() - 1;
        if position >= context {
            out.stop = StopReason::ContextFull;
            break;
        }
        logits = checked(model.forward(&[token], position, Logits::Last)?, position)?;
    }
    if !pending.is_empty() {
        on_text(&pending);
        out.text.push_str(&pending);
    }
    Ok(out)
}

/// Fails on logits that are not all finite. The samplers never draw a NaN, so without this a broken
/// weight or kernel would end as a stream of one token (or an empty answer), not as an error.
fn checked(logits: Vec<f32>, position: usize) -> Result<Vec<f32>> {
    let non_finite = logits.iter().filter(|l| !l.is_finite()).count();
    if non_finite > 0 {
        return Err(Error::NonFiniteLogits { position, non_finite, vocab: logits.len() });
    }
    Ok(logits)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::random::{write_byte_tokenizer, LlamaShape};
    use crate::model::LlamaConfig;

    /// Logits that favour token `3 + position`, and hold `bad` from position `bad_from` on.
    struct Scripted {
        config: LlamaConfig,
        bad_from: usize,
        bad: f32,
    }

    impl CausalLm for Scripted {
        fn config(&self) -> &LlamaConfig {
            &self.config
        }
        fn context_len(&self) -> usize {
            64
        }
        fn forward(&mut self, tokens: &[u32], start: usize, _: Logits) -> Result<Vec<f32>> {
            let position = start + tokens.len() - 1;
            let mut logits = vec![0.0; self.config.vocab_size];
            logits[3 + position] = 1.0;
            if position >= self.bad_from {
                logits[7] = self.bad;
            }
            Ok(logits)
        }
        fn device_name(&self) -> String {
            "scripted".into()
        }
        fn weight_bytes(&self) -> usize {
            0
        }
    }

    #[test]
    fn non_finite_logits_stop_generation_with_an_error_naming_the_position() {
        let shape = LlamaShape {
            hidden: 8,
            intermediate: 8,
            layers: 1,
            heads: 1,
            kv_heads: 1,
            head_dim: 8,
            vocab: 320,
            tied: true,
        };
        let dir = std::env::temp_dir().join(format!("rooflab-generate-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_byte_tokenizer(&dir, shape.vocab).unwrap();
        let tokenizer = Tokenizer::load(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let config = LlamaConfig::from_json(&shape.config_json().to_string()).unwrap();
        let opts = GenerateOptions {
            max_new_tokens: 8,
            sampling: SamplingParams::default(),
            stop_strings: vec![],
            eos_ids: vec![],
        };
        let prompt = [40, 41];
        let mut model = Scripted { config, bad_from: usize::MAX, bad: 0.0 };
        let fine = generate(&mut model, &tokenizer, &prompt, &opts, &mut |_| {}).unwrap();
        assert_eq!(fine.tokens, (4..12).collect::<Vec<u32>>());
        // The prompt's last position is 1: at 1 nothing is produced, at 4 the three tokens before it
        // are streamed, then the error.
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for bad_from in [1, 4] {
                model.bad_from = bad_from;
                model.bad = bad;
                let mut streamed = String::new();
                let e = generate(&mut model, &tokenizer, &prompt, &opts, &mut |t| streamed.push_str(t)).unwrap_err();
                let expected = format!("1 of the 320 logits at position {bad_from} are NaN or infinite");
                assert!(e.to_string().starts_with(&expected), "{bad} at {bad_from}: {e}");
                assert_eq!(streamed, fine.text[..bad_from - 1], "{bad} at {bad_from}");
            }
        }
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let ms: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&ms, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&ms, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&ms[..1], 99.0), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
