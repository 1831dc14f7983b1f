//! One error type for the engine. Every variant renders as a single line that names the problem
//! (the file, the tensor, the limit) so that the command line can print it as it is.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{path}: {message}")]
    BadFile { path: PathBuf, message: String },

    #[error("checkpoint has no tensor `{0}`")]
    MissingTensor(String),

    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    BadShape { name: String, found: Vec<usize>, expected: Vec<usize> },

    #[error("tensor `{name}` has dtype {found}, expected one of {expected}")]
    BadDtype { name: String, found: String, expected: String },

    #[error("unsupported model: {0}")]
    Unsupported(String),

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("prompt has {prompt} tokens but the context holds {context} (with {new} new tokens requested)")]
    ContextOverflow { prompt: usize, new: usize, context: usize },

    #[error(
        "{non_finite} of the {vocab} logits at position {position} are NaN or infinite: a weight or a kernel made them"
    )]
    NonFiniteLogits { position: usize, non_finite: usize, vocab: usize },

    #[error("no CUDA GPU: {0}")]
    NoGpu(String),

    #[error("CUDA: {0}")]
    Cuda(String),

    #[error("not enough GPU memory: {what} needs {needed} bytes, {free} free")]
    OutOfGpuMemory { what: String, needed: usize, free: usize },

    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub fn bad_file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::BadFile { path: path.into(), message: message.into() }
    }
}
