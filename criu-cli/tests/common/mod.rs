//! The support tree every CLI integration test uses (`mod common;` then
//! `use common::*;`). Each part holds one kind of thing:
//!
//! - [`programs`]: compiling the C programs in `tests/programs/` and
//!   starting the ones that need a particular setup (`restoree`).
//! - [`run`]: running `criu-rs` (`dump`, `restore`, daemons).
//! - [`procs`]: guards on processes a test started or restored, and
//!   questions about processes (`/proc`): state, threads, pids.
//! - [`images`]: hand-built image sets for error paths that need no
//!   process, and reading images with `crit`.
//! - [`check`]: comparing a restored process with its images or with itself
//!   before the dump, self-check reports, image directories left untouched.
//! - [`net`]: ports, network namespaces, waiting for sockets.
//!
//! This module holds what they all share: the one deadline ([`PATIENCE`]),
//! [`scratch`] directories and [`wait_until`].

#![allow(dead_code, unused_imports)]

pub mod check;
pub mod images;
pub mod net;
pub mod procs;
pub mod programs;
pub mod run;

pub use check::*;
pub use images::*;
pub use net::*;
pub use procs::*;
pub use programs::*;
pub use run::*;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a test waits for anything (a program getting ready, a pid
/// going away, a daemon exiting...). A hang guard, never a timing check:
/// the suite shares 2 cores with other developers' builds and tests, so a
/// step that takes milliseconds when idle can take seconds. Every wait in
/// the tests uses this one value (or a multiple of it for a whole run).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// An empty per-test scratch directory, `target/tmp/TEST_BINARY/NAME`
/// (emptied first; left in place afterwards for a look after a failure).
pub fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(env!("CARGO_CRATE_NAME")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Polls `cond` until it holds; fails the test, naming `what`, after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
