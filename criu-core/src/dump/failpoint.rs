//! Test knobs: forced failures for testing the "a failed dump leaves the
//! process as it was" guarantee (set `CRIU_RS_FAIL_AT` to one of the names
//! below), and forcing the code-patching injection path.

use super::DumpError;

/// Right after every thread is frozen.
pub const AFTER_FREEZE: &str = "after-freeze";
/// In the middle of syscall injection (scratch page mapped, sigactions read).
pub const MID_INJECT: &str = "mid-inject";
/// After injection is undone.
pub const AFTER_INJECT: &str = "after-inject";
/// After the first batch of memory was written.
pub const MID_MEMORY: &str = "mid-memory";
/// After the first pages went to the page server (`dump --page-server`).
pub const MID_SEND: &str = "mid-send";
/// In a tree, before the last task is collected (the others are done).
pub const MID_TREE: &str = "mid-tree";
/// After everything was collected, before the images are written.
pub const BEFORE_WRITE: &str = "before-write";

/// The environment variable naming the failure point.
pub const ENV: &str = "CRIU_RS_FAIL_AT";

/// Fails with [`DumpError::Forced`] when `CRIU_RS_FAIL_AT` names `point`.
pub fn check(point: &'static str) -> Result<(), DumpError> {
    match std::env::var(ENV) {
        Ok(v) if v == point => Err(DumpError::Forced(point)),
        _ => Ok(()),
    }
}

/// Test knob: with `CRIU_RS_PATCH_CODE=1`, syscalls are injected by
/// patching the code at each thread's `rip` instead of using a `syscall`
/// instruction of the vDSO (the fallback for processes without one), and
/// one by one instead of as one piece of code per thread (the fallback
/// for tasks that refuse an executable scratch mapping).
pub const PATCH_CODE_ENV: &str = "CRIU_RS_PATCH_CODE";

/// Whether [`PATCH_CODE_ENV`] asks for code patching.
pub fn patch_code_forced() -> bool {
    std::env::var(PATCH_CODE_ENV).is_ok_and(|v| v == "1")
}

/// Test knob: `CRIU_RS_LIVE_PAUSE_MS=N` makes a live copy wait N ms after
/// the tree is let go, before the first page is copied (faults and events
/// are served meanwhile): a test changes the address space in that window.
pub const LIVE_PAUSE_ENV: &str = "CRIU_RS_LIVE_PAUSE_MS";

/// Waits as [`LIVE_PAUSE_ENV`] asks, if it does.
pub fn live_pause() {
    if let Some(ms) = std::env::var(LIVE_PAUSE_ENV).ok().and_then(|v| v.parse::<u64>().ok()) {
        tracing::info!(ms, "pausing the live copy ({LIVE_PAUSE_ENV})");
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}
