//! Restore-side logic of the blob: what runs inside the task being restored.
//!
//! - [`plan`]: the order of `mremap` moves bringing premapped VMAs home.
//! - [`sigframe`]: the x86_64 `rt_sigframe` built for the final `rt_sigreturn`.
//! - [`vdso`]: vDSO ELF symbol lookup and jump patching.

pub mod plan;
pub mod sigframe;
pub mod vdso;
