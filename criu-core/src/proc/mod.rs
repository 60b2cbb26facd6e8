//! Reading the state of another process from `/proc/PID/...`.
//!
//! Each file format has its own parser module; this module holds the shared
//! error type and the helpers that open and read a `/proc` file.

pub mod fds;
pub mod kind_fdinfo;
pub mod limits;
pub mod maps;
pub mod mounts;
pub mod misc;
pub mod pagemap;
pub mod stat;
pub mod status;

use std::path::{Path, PathBuf};

/// A failure to read or understand a `/proc` file.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The file could not be read (the process may have gone away).
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file was read but a line did not have the expected form.
    #[error("{path}: cannot parse {what} in {line:?}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was expected.
        what: &'static str,
        /// The offending text.
        line: String,
    },
}

impl ProcError {
    /// The errno behind an I/O failure, if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            ProcError::Io { source, .. } => source.raw_os_error(),
            ProcError::Parse { .. } => None,
        }
    }
}

/// Result of the `/proc` parsers.
pub type Result<T> = std::result::Result<T, ProcError>;

/// The path `/proc/PID/NAME` (NAME may contain slashes, e.g. `task/TID/stat`).
pub fn path(pid: i32, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{name}"))
}

/// Reads a whole `/proc` file as text.
pub fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| ProcError::Io { path: path.to_owned(), source })
}

/// Reads a whole `/proc` file as bytes.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| ProcError::Io { path: path.to_owned(), source })
}

/// Builds a parse error for `path`.
pub(crate) fn parse_err(path: &Path, what: &'static str, line: &str) -> ProcError {
    ProcError::Parse { path: path.to_owned(), what, line: line.to_owned() }
}

/// Parses a hexadecimal number as `/proc` prints them (no `0x` prefix).
pub(crate) fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim(), 16).ok()
}
