//! File locks: every lock of `filelocks.img` held by the task must show in
//! the `lock:` lines of its fd's `/proc/PID/fdinfo` (kind, read or write,
//! range).

use super::{proc_err, Check, TaskImages};
use crate::images::pb;

/// CRIU's `FL_*` lock kinds (`file_lock_entry.flag`), as fdinfo names
/// them.
const KINDS: [(u32, &str); 4] = [(1, "POSIX"), (2, "FLOCK"), (4, "OFDLCK"), (8, "LEASE")];

pub fn check(t: &TaskImages) -> Check {
    for l in t.tree.locks.iter().filter(|l| l.pid == Some(t.pid)) {
        let fd = l.fd.unwrap_or(-1);
        let (_, text) = crate::proc::fds::read_fdinfo_text(t.pid, fd).map_err(proc_err)?;
        let want = describe(l);
        if !text.lines().filter_map(|line| line.strip_prefix("lock:")).filter_map(parse).any(|got| got == want) {
            let held: Vec<String> = text.lines().filter_map(|line| line.strip_prefix("lock:")).filter_map(parse).collect();
            let held = if held.is_empty() { "no lock".to_string() } else { held.join("; ") };
            return Err(format!("fd {fd}: {held}, image {want}"));
        }
    }
    Ok(())
}

/// An image lock as "KIND TYPE START-END" ("EOF" for a lock to the end).
fn describe(l: &pb::FileLockEntry) -> String {
    let kind = KINDS.iter().find(|k| Some(k.0) == l.flag).map_or("?", |k| k.1);
    let ty = match l.r#type {
        Some(0) => "READ",
        Some(1) => "WRITE",
        _ => "?",
    };
    let start = l.start.unwrap_or_default();
    let end = match l.len.unwrap_or_default() {
        0 => "EOF".to_string(),
        n => (start + n - 1).to_string(),
    };
    format!("{kind} {ty} {start}-{end}")
}

/// A `lock:` line (`\t1: POSIX  ADVISORY  WRITE 1234 00:2c:56 0 EOF`) as
/// [`describe`] writes it; blocked requests (`->`) are not locks held.
fn parse(line: &str) -> Option<String> {
    let w: Vec<&str> = line.split_whitespace().collect();
    if w.get(1) == Some(&"->") {
        return None;
    }
    let (kind, ty, start, end) = (w.get(1)?, w.get(3)?, w.get(6)?, w.get(7)?);
    Some(format!("{kind} {ty} {start}-{end}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_lines_and_entries_read_alike() {
        assert_eq!(parse("\t1: POSIX  ADVISORY  WRITE 1234 00:2c:56 0 EOF").as_deref(), Some("POSIX WRITE 0-EOF"));
        assert_eq!(parse("\t2: FLOCK  ADVISORY  READ 99 00:2c:56 10 19").as_deref(), Some("FLOCK READ 10-19"));
        assert_eq!(parse("\t2: -> POSIX  ADVISORY  WRITE 99 00:2c:56 0 EOF"), None);
        let e = pb::FileLockEntry { flag: Some(2), r#type: Some(0), pid: Some(1), fd: Some(3), start: Some(10), len: Some(10) };
        assert_eq!(describe(&e), "FLOCK READ 10-19");
        let e = pb::FileLockEntry { flag: Some(1), r#type: Some(1), pid: Some(1), fd: Some(3), start: Some(0), len: Some(0) };
        assert_eq!(describe(&e), "POSIX WRITE 0-EOF");
    }
}
