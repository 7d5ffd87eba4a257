//! The one error type of the crate: every failure a user can act on, with a one-line message.
//! It must not carry panics or backtraces; each message says what was wrong and what to do.

use std::fmt;
use std::path::{Path, PathBuf};

/// Every way bridgeface can fail. Messages are one line and name the thing at fault.
#[derive(Debug)]
pub enum Error {
    /// A file or folder could not be read or written.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A weight file is not valid safetensors (corrupt, truncated, bad header).
    WeightFormat { path: PathBuf, reason: String },
    /// A tensor the model needs is absent from the weight file.
    MissingTensor { path: PathBuf, name: String },
    /// A tensor has the wrong shape.
    TensorShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// A tensor has a dtype we cannot use.
    TensorDtype { name: String, found: String },
    /// The weight file's metadata is missing a key or holds a bad value.
    Metadata { key: String, reason: String },
    /// An operation received inputs whose shapes do not fit together.
    Shape(String),
    /// A file that should be an image could not be decoded.
    Image { path: PathBuf, reason: String },
    /// A command was given nothing to work on.
    EmptyInput(String),
    /// A command-line or API argument is out of range.
    InvalidArgument(String),
    /// A library function's parameter is out of range. `message` names it as `` `name` ``
    /// (the library's word); the CLI, which knows its flags, shows it as `--name`
    /// (`cli::error_line`).
    InvalidParameter { name: &'static str, message: String },
    /// A requested instruction set is not available on this CPU.
    UnsupportedIsa(String),
    /// A needed asset (model, dataset, weights) is not present.
    MissingAsset(String),
    /// The CUDA device, driver or NVRTC could not be used (absent, failed, or not built in).
    Cuda(String),
    /// An ONNX model could not be parsed, or uses an op or attribute bridgeface does not support.
    Onnx(String),
}

/// Shorthand used across the crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A parameter error: `message` must name the parameter as `` `name` ``.
    pub fn parameter(name: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidParameter {
            name,
            message: message.into(),
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "cannot access {}: {}", path.display(), source),
            Error::WeightFormat { path, reason } => write!(
                f,
                "{} is not a valid safetensors weight file ({reason}); re-create it with `bridge init` or re-download it",
                path.display()
            ),
            Error::MissingTensor { path, name } => write!(
                f,
                "{} has no tensor named `{name}`; it was not written for this model",
                path.display()
            ),
            Error::TensorShape { name, expected, found } => {
                write!(f, "tensor `{name}` has shape {found:?}, expected {expected:?}")
            }
            Error::TensorDtype { name, found } => {
                write!(f, "tensor `{name}` has dtype {found}; only F32 and F16 are supported")
            }
            Error::Metadata { key, reason } => write!(f, "weight metadata `{key}`: {reason}"),
            Error::Shape(msg) => write!(f, "shape error: {msg}"),
            Error::Image { path, reason } => {
                write!(f, "cannot read image {}: {reason}", path.display())
            }
            Error::EmptyInput(msg) => write!(f, "nothing to do: {msg}"),
            Error::InvalidArgument(msg) => write!(f, "invalid argument: {msg}"),
            Error::InvalidParameter { message, .. } => write!(f, "invalid argument: {message}"),
            Error::UnsupportedIsa(msg) => write!(f, "unsupported instruction set: {msg}"),
            Error::MissingAsset(msg) => write!(f, "missing asset: {msg}"),
            Error::Cuda(msg) => write!(f, "cuda: {msg}"),
            Error::Onnx(msg) => write!(f, "ONNX model: {msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
