//! The checkpoint's tokenizer (`tokenizer.json`, through the tokenizers crate) and chat template
//! (`tokenizer_config.json`'s Jinja `chat_template`, rendered with minijinja in Python-compatible mode).

use std::path::Path;

use serde_json::Value;

use crate::{Error, Result};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    chat_template: Option<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

/// One chat message.
#[derive(Debug, Clone)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Message { role: role.into(), content: content.into() }
    }
}

/// `tokenizer_config.json` writes special tokens either as strings or as `{"content": ...}` objects.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

impl Tokenizer {
    /// Loads `dir/tokenizer.json` and, when present, `dir/tokenizer_config.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(Error::Tokenizer(format!("{} is missing", path.display())));
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        let config_path = dir.join("tokenizer_config.json");
        let config: Value = match std::fs::read_to_string(&config_path) {
            Ok(text) => {
                serde_json::from_str(&text).map_err(|e| Error::Tokenizer(format!("{}: {e}", config_path.display())))?
            }
            Err(_) => Value::Null,
        };
        Ok(Tokenizer {
            inner,
            chat_template: config.get("chat_template").and_then(|t| t.as_str()).map(str::to_string),
            bos_token: token_text(config.get("bos_token")),
            eos_token: token_text(config.get("eos_token")),
        })
    }

    /// Token ids of `text`; `add_special_tokens` adds what the tokenizer's post-processor adds (BOS).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let encoding = self.inner.encode(text, add_special_tokens).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner.decode(ids, skip_special_tokens).map_err(|e| Error::Tokenizer(e.to_string()))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Id of the end-of-sequence token named in tokenizer_config.json (e.g. `<|im_end|>`).
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_token.as_deref().and_then(|t| self.token_to_id(t))
    }

    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// Renders `messages` with the chat template, ending with the assistant's turn opened.
    pub fn apply_chat_template(&self, messages: &[Message]) -> Result<String> {
        let template = self
            .chat_template
            .as_deref()
            .ok_or_else(|| Error::Tokenizer("this checkpoint has no chat template (tokenizer_config.json)".into()))?;
        let mut env = minijinja::Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        let render_error = |e: minijinja::Error| Error::Tokenizer(format!("chat template: {e}"));
        env.add_template("chat", template).map_err(render_error)?;
        let ctx = minijinja::context! {
            messages => messages.iter().map(|m| minijinja::context! { role => &m.role, content => &m.content }).collect::<Vec<_>>(),
            add_generation_prompt => true,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
        };
        env.get_template("chat").and_then(|t| t.render(ctx)).map_err(render_error)
    }

    /// An incremental decoder that yields text only once it forms whole characters.
    pub fn stream(&self) -> TextStream<'_> {
        TextStream { tokenizer: self, ids: vec![], window_start: 0, emitted_end: 0 }
    }
}

/// Decodes generated tokens as they arrive, in constant time per token however long the output.
/// A token can end inside a multi-byte character, and decoders treat the first token of a text
/// specially (a sentencepiece decoder drops its leading space), so each push decodes a short
/// window twice: from `window_start` to the last emitted token, and from `window_start` to the
/// newest; the difference is the new text, returned once it ends on a whole character. (Decoding
/// the whole output on every push, as this did before, grows with the output: at 4k tokens it
/// costs about as much as a GPU decode step of a small model.)
pub struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    ids: Vec<u32>,
    /// Where the window starts: the start of the text emitted last.
    window_start: usize,
    /// Tokens before this have been emitted as text.
    emitted_end: usize,
}

impl TextStream<'_> {
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let emitted = self.tokenizer.decode(&self.ids[self.window_start..self.emitted_end], true)?;
        let text = self.tokenizer.decode(&self.ids[self.window_start..], true)?;
        if text.len() <= emitted.len() || text.ends_with('\u{FFFD}') || !text.is_char_boundary(emitted.len()) {
            return Ok(String::new()); // nothing new yet, or a character still open
        }
        let piece = text[emitted.len()..].to_string();
        self.window_start = self.emitted_end;
        self.emitted_end = self.ids.len();
        Ok(piece)
    }

    /// Everything decoded so far.
    pub fn text(&self) -> Result<String> {
        self.tokenizer.decode(&self.ids, true)
    }
}
