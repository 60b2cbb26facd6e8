//! `/proc/PID/limits`: resource limits, readable without CAP_SYS_RESOURCE
//! (unlike `prlimit` on a process of another user).

use super::{parse_err, read_text, Result};
use std::path::Path;

/// `RLIM_INFINITY`.
pub const RLIM_INFINITY: u64 = u64::MAX;

/// Number of resource limits the kernel reports (`RLIM_NLIMITS`).
pub const RLIM_NLIMITS: usize = 16;

/// The row titles in `RLIMIT_*` order.
const NAMES: [&str; RLIM_NLIMITS] = [
    "Max cpu time",
    "Max file size",
    "Max data size",
    "Max stack size",
    "Max core file size",
    "Max resident set",
    "Max processes",
    "Max open files",
    "Max locked memory",
    "Max address space",
    "Max file locks",
    "Max pending signals",
    "Max msgqueue size",
    "Max nice priority",
    "Max realtime priority",
    "Max realtime timeout",
];

/// One limit: (soft, hard), `RLIM_INFINITY` for unlimited.
pub type Rlimit = (u64, u64);

fn value(s: &str) -> Option<u64> {
    if s == "unlimited" {
        Some(RLIM_INFINITY)
    } else {
        s.parse().ok()
    }
}

/// Parses limits text into an array indexed by `RLIMIT_*`.
pub fn parse_limits(text: &str, path: &Path) -> Result<[Rlimit; RLIM_NLIMITS]> {
    let mut out = [(0, 0); RLIM_NLIMITS];
    let mut seen = [false; RLIM_NLIMITS];
    for line in text.lines().skip(1) {
        let Some(i) = NAMES.iter().position(|n| line.starts_with(n)) else { continue };
        let mut it = line[NAMES[i].len()..].split_whitespace();
        let soft = it.next().and_then(value);
        let hard = it.next().and_then(value);
        match (soft, hard) {
            (Some(s), Some(h)) => {
                out[i] = (s, h);
                seen[i] = true;
            }
            _ => return Err(parse_err(path, "a limit", line)),
        }
    }
    if let Some(i) = seen.iter().position(|s| !s) {
        return Err(parse_err(path, "every limit", NAMES[i]));
    }
    Ok(out)
}

/// Reads `/proc/PID/limits`.
pub fn read_limits(pid: i32) -> Result<[Rlimit; RLIM_NLIMITS]> {
    let path = super::path(pid, "limits");
    parse_limits(&read_text(&path)?, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_getrlimit() {
        let l = read_limits(std::process::id() as i32).unwrap();
        let r = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        assert_eq!(l[7].0, r.current.unwrap_or(RLIM_INFINITY));
        assert_eq!(l[7].1, r.maximum.unwrap_or(RLIM_INFINITY));
        let s = rustix::process::getrlimit(rustix::process::Resource::Stack);
        assert_eq!(l[3].0, s.current.unwrap_or(RLIM_INFINITY));
    }
}
