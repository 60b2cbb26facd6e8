//! What the command does at each stage ([`criu_core::actions`]): CRIU's
//! action scripts (`--action-script`) and its status descriptor
//! (`--status-fd`).
//!
//! Scripts run in the order given, each with `CRTOOLS_SCRIPT_ACTION` (the
//! stage's name), `CRTOOLS_IMAGE_DIR` (the images directory) and, once the
//! root task's pid is known, `CRTOOLS_INIT_PID`; a script exiting non-zero
//! fails the stage (every script still runs), with its exit status as the
//! code. At `status-ready` the scripts run, then one NUL byte is written to
//! the status descriptor, which is closed.
//!
//! Under `criu-rs swrk` with `notify_scripts` ([`crate::swrk`]), each stage
//! is first sent to the RPC client as a NOTIFY message, and the stage fails
//! unless the client answers `notify_success` (CRIU's RPC mode; the
//! scripts of a configuration file still run after it).

use criu_core::actions::{Action, ActionFailed, ActionHook};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// The RPC client's stage handler (`criu-rs swrk` with `notify_scripts`):
/// set once, in the process that runs the request.
pub type RpcNotify = Box<dyn Fn(Action, Option<i32>) -> Result<(), ActionFailed> + Send + Sync>;

static RPC_NOTIFY: std::sync::OnceLock<RpcNotify> = std::sync::OnceLock::new();

/// Sends every stage to `notify` first (see the module doc).
pub fn set_rpc_notify(notify: RpcNotify) {
    let _ = RPC_NOTIFY.set(notify);
}

/// The stage handler of one command.
pub struct Stages {
    scripts: Vec<PathBuf>,
    images_dir: PathBuf,
    /// Set once known, kept for the later stages (as CRIU's environment).
    root: Mutex<Option<i32>>,
    status: Mutex<Option<OwnedFd>>,
}

impl Stages {
    /// From the command line's scripts, images directory and `--status-fd`.
    pub fn new(scripts: &[PathBuf], images_dir: &std::path::Path, status_fd: Option<i32>) -> Arc<Stages> {
        let images_dir = std::fs::canonicalize(images_dir).unwrap_or_else(|_| images_dir.to_path_buf());
        // SAFETY: the caller handed this descriptor to us (`--status-fd`);
        // criu-rs owns it from now on and closes it once written.
        let status = status_fd.filter(|&fd| fd >= 0).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
        Arc::new(Stages { scripts: scripts.to_vec(), images_dir, root: Mutex::new(None), status: Mutex::new(status) })
    }

    /// The hook for criu-core.
    pub fn hook(self: &Arc<Self>) -> ActionHook {
        let me = Arc::clone(self);
        ActionHook::new(move |action, root| me.run(action, root))
    }

    /// Runs the scripts for `action`; at `status-ready` also writes the
    /// status byte.
    pub fn run(&self, action: Action, root: Option<i32>) -> Result<(), ActionFailed> {
        let root = {
            let mut known = self.root.lock().unwrap_or_else(|e| e.into_inner());
            if root.is_some() {
                *known = root;
            }
            *known
        };
        if let Some(notify) = RPC_NOTIFY.get() {
            notify(action, root)?;
        }
        let mut failed = None;
        for script in &self.scripts {
            tracing::debug!(action = action.name(), script = %script.display(), "running action script");
            let mut cmd = Command::new(script);
            cmd.env("CRTOOLS_SCRIPT_ACTION", action.name()).env("CRTOOLS_IMAGE_DIR", &self.images_dir).stdin(Stdio::null());
            if let Some(pid) = root {
                cmd.env("CRTOOLS_INIT_PID", pid.to_string());
            }
            let what = match cmd.status() {
                Ok(st) if st.success() => continue,
                Ok(st) => (format!("action script {} ({}) exited with {st}", script.display(), action.name()), st.code().unwrap_or(1)),
                Err(e) => (format!("action script {} ({}): {e}", script.display(), action.name()), 1),
            };
            tracing::error!("{}", what.0);
            failed.get_or_insert(ActionFailed { what: what.0, code: what.1 });
        }
        if let Some(f) = failed {
            return Err(f);
        }
        if action == Action::StatusReady {
            self.ready()?;
        }
        Ok(())
    }

    /// Writes the status byte (once) and closes the descriptor.
    pub fn ready(&self) -> Result<(), ActionFailed> {
        let fd = self.status.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(fd) = fd {
            rustix::io::write(&fd, &[0]).map_err(|e| ActionFailed { what: format!("writing the status descriptor: {e}"), code: 1 })?;
        }
        Ok(())
    }
}
