//! Test knobs: `CRIU_RS_FAILPOINT=NAME[,NAME...]` makes the restore skip
//! one piece of state and still report success, so that tests can check
//! that `restore --verify` ([`super::verify`]) notices.

/// The environment variable.
pub const ENV: &str = "CRIU_RS_FAILPOINT";
/// Resource limits are not restored (the tasks keep criu-rs's).
pub const SKIP_RLIMITS: &str = "skip-rlimits";
/// Regular files are not positioned (they stay at offset 0).
pub const SKIP_FD_POS: &str = "skip-fd-pos";
/// File owners (`F_SETOWN_EX`, `F_SETSIG`) are not set.
pub const SKIP_FOWN: &str = "skip-fown";
/// Blocked signal masks are not restored (nothing blocked).
pub const SKIP_SIGMASK: &str = "skip-sigmask";

/// Whether `CRIU_RS_FAILPOINT` names `point`.
pub fn skip(point: &str) -> bool {
    std::env::var(ENV).is_ok_and(|v| v.split(',').any(|p| p == point))
}
