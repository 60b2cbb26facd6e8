//! The embedded restorer blob: placing it, relocating it, calling it.
//!
//! The blob (crate `restorer-pie`) is built and packaged by the build
//! script; [`embedded`] parses the package once. To run it somewhere:
//!
//! - in another process: allocate `pkg.mem_size()` bytes, fill them with
//!   [`relocate_into`] for the address the blob will live at, place them
//!   there, and jump to `base + pkg.entry(name)`;
//! - in this process (tests, benchmarks): [`Loaded::map_at`].
//!
//! The package format and its invariants are documented in
//! `linker::package`.

mod loaded;
mod relocate;

pub use linker::package::{EntryPoint, Package, PackageError, Prot, Segment, PAGE_SIZE};
pub use loaded::Loaded;
pub use relocate::relocate_into;

use std::sync::OnceLock;

/// The package file written by the build script.
pub static EMBEDDED_PACKAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/restorer.pie"));

/// Errors placing or running the blob.
#[derive(Debug, thiserror::Error)]
pub enum PieError {
    #[error("the restorer package is invalid: {0}")]
    Package(#[from] PackageError),
    #[error("load address {0:#x} is not page aligned")]
    Misaligned(usize),
    #[error("load address {base:#x} + {len:#x} bytes does not fit the address space")]
    AddressOverflow { base: usize, len: u64 },
    #[error("destination holds {have} bytes, the blob needs {need}")]
    BufferTooSmall { have: usize, need: u64 },
    #[error("something is already mapped in {addr:#x}..{end:#x}")]
    AddressInUse { addr: usize, end: usize },
    #[error("mmap of {len:#x} bytes at {addr:#x} failed: {source}")]
    Map { addr: usize, len: usize, source: rustix::io::Errno },
    #[error("asked for the blob at {want:#x}, the kernel placed it at {got:#x}")]
    Misplaced { want: usize, got: usize },
    #[error("mprotect({addr:#x}, {len:#x}, {prot}) failed: {source}")]
    Protect { addr: usize, len: usize, prot: Prot, source: rustix::io::Errno },
    #[error("the blob has no entry point `{0}`")]
    NoSuchEntry(String),
}

/// The embedded package, parsed and validated on first use.
pub fn embedded() -> Result<&'static Package, PieError> {
    static PARSED: OnceLock<Result<Package, PackageError>> = OnceLock::new();
    match PARSED.get_or_init(|| Package::parse(EMBEDDED_PACKAGE)) {
        Ok(pkg) => Ok(pkg),
        Err(e) => Err(PieError::Package(e.clone())),
    }
}

#[cfg(test)]
mod tests;
