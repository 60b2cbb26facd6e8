//! Errors of the image layer. Each names the file and what is wrong with it.

use std::path::PathBuf;

/// Result alias of the image layer.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;

/// An image file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file could not be opened, read, written or renamed.
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The header does not carry the magic of the expected image kind.
    #[error("{path}: bad magic {found:#010x}, expected {expected:#010x} ({what})")]
    BadMagic {
        path: PathBuf,
        found: u32,
        expected: u32,
        what: &'static str,
    },
    /// The header matches no known image kind.
    #[error("{path}: not a known image kind (first bytes {head:02x?})")]
    UnknownKind { path: PathBuf, head: Vec<u8> },
    /// The file ends in the middle of a header, an entry or a payload.
    #[error("{path}: truncated {what} at offset {offset}: wanted {wanted} bytes, got {got}")]
    Truncated {
        path: PathBuf,
        what: &'static str,
        offset: u64,
        wanted: u64,
        got: u64,
    },
    /// An entry or payload length is above the sanity limit.
    #[error("{path}: {what} at offset {offset} claims {len} bytes, over the {limit}-byte limit")]
    Oversize {
        path: PathBuf,
        what: &'static str,
        offset: u64,
        len: u64,
        limit: u64,
    },
    /// The entry bytes are not a valid encoding of the expected message.
    #[error("{path}: cannot decode {msg} at offset {offset}: {source}")]
    Decode {
        path: PathBuf,
        msg: &'static str,
        offset: u64,
        #[source]
        source: prost::DecodeError,
    },
    /// A proto2 `required` field is absent (on read or before a write).
    #[error("{path}: {msg} entry at offset {offset} lacks required field `{field}`")]
    MissingRequired {
        path: PathBuf,
        msg: &'static str,
        offset: u64,
        field: String,
    },
    /// An entry records a payload length different from the data given.
    #[error("{path}: {msg} at offset {offset} records a {recorded}-byte payload, but {actual} bytes were given")]
    PayloadMismatch {
        path: PathBuf,
        msg: &'static str,
        offset: u64,
        recorded: u64,
        actual: u64,
    },
    /// An entry is well-formed protobuf but inconsistent.
    #[error("{path}: {msg} entry at offset {offset}: {problem}")]
    Invalid {
        path: PathBuf,
        msg: &'static str,
        offset: u64,
        problem: String,
    },
    /// The entries of an image do not fit together (or restore cannot use them).
    #[error("{path}: {msg}: {problem}")]
    Inconsistent {
        path: PathBuf,
        msg: &'static str,
        problem: String,
    },
    /// The image has no entry where one was required.
    #[error("{path}: no {msg} entry (empty image)")]
    Empty { path: PathBuf, msg: &'static str },
    /// More data follows where the image should have ended.
    #[error("{path}: unexpected data after the last {msg} entry at offset {offset}")]
    Trailing {
        path: PathBuf,
        msg: &'static str,
        offset: u64,
    },
    /// The image set is of a version this code does not read.
    #[error("{path}: unsupported image version {found} (expected {expected})")]
    Version {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
}
