//! Restore-side logic of the blob: what runs inside the task being restored.
//!
//! - [`plan`]: the order of `mremap` moves bringing premapped VMAs home.
//! - [`sigframe`]: the x86_64 `rt_sigframe` built for the final `rt_sigreturn`.
//! - [`vdso`]: vDSO ELF symbol lookup, jump patching and syscall stubs.
//! - [`layout`]: VMA list checks, gaps to unmap, vDSO parking positions.
//! - [`ctx`]: the argument block as seen from the blob; failure reporting.
//! - [`memory`], [`task`], [`threads`], [`finish`]: the stages of [`run::restore`].
//! - [`testentry`]: stages run as PIE test entries by a loader.

pub mod ctx;
pub mod finish;
pub mod layout;
pub mod memory;
pub mod plan;
pub mod run;
pub mod sigframe;
pub mod task;
pub mod testentry;
pub mod threads;
pub mod vdso;
