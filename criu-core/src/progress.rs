//! Progress of the long phases (copying memory at dump, filling it at
//! restore), reported to whoever draws it.
//!
//! The engine only counts pages; a front end installs a [`Progress`] once
//! with [`install`] and decides whether and how to draw. Without one, every
//! report is a no-op. The restore side reports from the forked task, before
//! it becomes the restored process, so each phase names the fd to draw on
//! (the task's fd 2 is no longer criu-rs's stderr by then).

use std::os::fd::BorrowedFd;
use std::sync::OnceLock;

/// Receives progress reports. Calls come from one thread at a time.
pub trait Progress: Send + Sync {
    /// A phase of `total` pages starts; anything drawn goes to `out`, which
    /// stays open until [`Progress::finish`].
    fn start(&self, what: &'static str, total: u64, out: BorrowedFd<'_>);
    /// `pages` more pages are done.
    fn advance(&self, pages: u64);
    /// The phase ended (successfully or not).
    fn finish(&self);
}

static SINK: OnceLock<Box<dyn Progress>> = OnceLock::new();

/// Installs the process-wide receiver; only the first call takes effect.
pub fn install(sink: Box<dyn Progress>) {
    let _ = SINK.set(sink);
}

/// Whether a receiver is installed.
pub fn installed() -> bool {
    SINK.get().is_some()
}

/// A running phase; finishes it when dropped, so early returns on errors
/// end the phase too.
pub struct Phase(());

impl Phase {
    /// Starts a phase of `total` pages drawn on `out`.
    pub fn start(what: &'static str, total: u64, out: BorrowedFd<'_>) -> Phase {
        if let Some(s) = SINK.get() {
            s.start(what, total, out);
        }
        Phase(())
    }
}

/// Reports `pages` more pages done in the running phase.
pub fn advance(pages: u64) {
    if let Some(s) = SINK.get() {
        s.advance(pages);
    }
}

impl Drop for Phase {
    fn drop(&mut self) {
        if let Some(s) = SINK.get() {
            s.finish();
        }
    }
}
