//! The stages at which a dump or restore tells its caller where it is, as
//! CRIU's action scripts (`--action-script`) see them.
//!
//! The engine calls an [`ActionHook`] at the stages only it can see (the
//! tree frozen and its images written, every task restored but not yet
//! resumed, a daemon listening); the command line calls it itself at the
//! stages before and after the engine runs (`pre-dump`, `pre-restore`,
//! `post-resume`). The names are CRIU's (`CRTOOLS_SCRIPT_ACTION`).
//!
//! criu-rs restores no namespaces and locks no network, so the stages
//! tied to them (`network-lock`, `network-unlock`, `setup-namespaces`,
//! `post-setup-namespaces`) never come, as in CRIU for a tree that has no
//! namespace of its own; `orphan-pts-master` and `query-ext-files` exist
//! only in CRIU's RPC mode.

use std::sync::Arc;

/// One stage (CRIU's `enum script_actions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Before the tree is frozen.
    PreDump,
    /// The images are complete; the tree is still frozen. A failure
    /// resumes the tree and fails the dump.
    PostDump,
    /// Before anything is restored.
    PreRestore,
    /// Every task is restored and held before its first instruction. A
    /// failure kills the tree and fails the restore.
    PostRestore,
    /// Lock the network of the tree's own network namespace (never sent).
    NetworkLock,
    /// Unlock it (never sent).
    NetworkUnlock,
    /// The root task exists with its namespaces (never sent).
    SetupNamespaces,
    /// The namespaces are configured (never sent).
    PostSetupNamespaces,
    /// Just before the restored tasks run; a failure is only logged.
    PreResume,
    /// The restored tasks run.
    PostResume,
    /// A master pty was opened for an orphan slave (RPC mode only).
    OrphanPtsMaster,
    /// A daemon (`page-server`, `lazy-pages`) is ready for its peers.
    StatusReady,
    /// Which files are external (RPC mode only).
    QueryExtFiles,
    /// Before images are streamed (`--stream`, not supported).
    PreStream,
}

impl Action {
    /// Every stage.
    pub const ALL: &'static [Action] = &[
        Action::PreDump,
        Action::PostDump,
        Action::PreRestore,
        Action::PostRestore,
        Action::NetworkLock,
        Action::NetworkUnlock,
        Action::SetupNamespaces,
        Action::PostSetupNamespaces,
        Action::PreResume,
        Action::PostResume,
        Action::OrphanPtsMaster,
        Action::StatusReady,
        Action::QueryExtFiles,
        Action::PreStream,
    ];

    /// CRIU's name for the stage (the value of `CRTOOLS_SCRIPT_ACTION`).
    pub fn name(self) -> &'static str {
        match self {
            Action::PreDump => "pre-dump",
            Action::PostDump => "post-dump",
            Action::PreRestore => "pre-restore",
            Action::PostRestore => "post-restore",
            Action::NetworkLock => "network-lock",
            Action::NetworkUnlock => "network-unlock",
            Action::SetupNamespaces => "setup-namespaces",
            Action::PostSetupNamespaces => "post-setup-namespaces",
            Action::PreResume => "pre-resume",
            Action::PostResume => "post-resume",
            Action::OrphanPtsMaster => "orphan-pts-master",
            Action::StatusReady => "status-ready",
            Action::QueryExtFiles => "query-ext-files",
            Action::PreStream => "pre-stream",
        }
    }
}

/// Why an action failed: what the hook says (a script's exit status, for
/// instance), and the code a command should exit with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}")]
pub struct ActionFailed {
    /// What failed.
    pub what: String,
    /// The exit code to pass on (CRIU exits with a failed `post-dump`
    /// script's status).
    pub code: i32,
}

/// The caller's reaction to a stage: `run(action, root_pid)`, where
/// `root_pid` is the root task's pid once it is known.
#[derive(Clone)]
pub struct ActionHook(Arc<dyn Fn(Action, Option<i32>) -> Result<(), ActionFailed> + Send + Sync>);

impl ActionHook {
    /// Wraps `f`.
    pub fn new(f: impl Fn(Action, Option<i32>) -> Result<(), ActionFailed> + Send + Sync + 'static) -> Self {
        ActionHook(Arc::new(f))
    }

    /// Tells the caller that `action` is reached.
    pub fn run(&self, action: Action, root: Option<i32>) -> Result<(), ActionFailed> {
        tracing::debug!(action = action.name(), "running action hook");
        (self.0)(action, root)
    }
}

impl std::fmt::Debug for ActionHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ActionHook")
    }
}

/// Runs `hook` (if any) at `action`.
pub fn run(hook: Option<&ActionHook>, action: Action, root: Option<i32>) -> Result<(), ActionFailed> {
    hook.map_or(Ok(()), |h| h.run(action, root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_criu_s_and_distinct() {
        let names: std::collections::BTreeSet<&str> = Action::ALL.iter().map(|a| a.name()).collect();
        assert_eq!(names.len(), Action::ALL.len());
        for n in ["pre-dump", "post-dump", "pre-restore", "post-restore", "network-lock", "network-unlock",
                  "setup-namespaces", "post-setup-namespaces", "pre-resume", "post-resume", "orphan-pts-master"] {
            assert!(names.contains(n), "{n}");
        }
    }

    #[test]
    fn hook_sees_the_stage_and_root() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        let hook = ActionHook::new(move |a, root| {
            s.lock().unwrap().push((a, root));
            if a == Action::PostDump { Err(ActionFailed { what: "no".into(), code: 3 }) } else { Ok(()) }
        });
        assert!(run(Some(&hook), Action::PreDump, Some(7)).is_ok());
        assert_eq!(run(Some(&hook), Action::PostDump, Some(7)).unwrap_err().code, 3);
        assert!(run(None, Action::PostDump, None).is_ok());
        assert_eq!(*seen.lock().unwrap(), vec![(Action::PreDump, Some(7)), (Action::PostDump, Some(7))]);
    }
}
