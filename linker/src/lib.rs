//! The restorer blob's toolchain: the linker script (`restorer.ld`), the
//! ELF packager and the package format it writes, and the build driver.
//!
//! - [`package`]: the package file format (parse, validate, serialise).
//! - [`pack`]: turns the linked blob ELF into a [`package::Package`],
//!   refusing anything the loader could not apply.
//! - [`build`]: runs the nested `cargo build` of `restorer-pie` and packs
//!   the result (used by criu-core's build script and `cargo xtask`).

pub mod build;
pub mod pack;
pub mod package;

pub use pack::{pack, PackError};
pub use package::{EntryPoint, Package, PackageError, Prot, Segment, PAGE_SIZE};
