//! Restore: bring a dumped process back from its image files.
//!
//! The host side, in order:
//! - [`load`] reads and validates the images into a [`plan::TaskPlan`];
//! - [`clone`] creates the task with its dumped pid (a fork of criu-rs);
//! - in the child, [`fds`] and [`fs`] rebuild files, [`premap`] builds the
//!   memory in a reserved area, [`args`] fills the blob's argument block and
//!   [`jump`] enters the blob;
//! - in the parent, [`finalize`] catches the blob's last stop, removes the
//!   blob from the task and lets it run.
//!
//! [`task::TaskGuard`] kills the task if anything fails once it exists.

pub mod args;
pub mod clone;
pub mod error;
pub mod fds;
pub mod fs;
pub mod hole;
pub mod load;
pub mod maps;
pub mod plan;
pub mod premap;
pub mod task;
pub mod validate;
pub mod vdso;
pub mod xsave;

pub use error::{RestoreError, Result};
