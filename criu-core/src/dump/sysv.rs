//! SysV shared memory attachments (`shmat`).
//!
//! criu-rs does not dump IPC namespaces (CRIU does, with the segments'
//! contents, and refuses attachments otherwise). An attachment is dumped
//! as a reference to its segment, which stays in the kernel with its
//! contents while the process is gone, and is attached again at restore.
//! That holds only for a segment that outlives the dumped process and that
//! the restore can attach whole, so the dump refuses, naming it:
//!
//! - a segment of another IPC namespace than criu-rs's;
//! - a segment marked for removal (`IPC_RMID`): it goes away with its last
//!   attachment, i.e. when the dump kills the process;
//! - part of a segment (an attachment partly unmapped, moved or split by
//!   `mprotect`): `shmat` attaches a segment whole.

use super::model::Vma;
use super::vmas::status;
use super::DumpError;
use crate::proc::{self, ProcError};

/// `SHM_DEST` in a segment's mode: marked for removal.
const SHM_DEST: u32 = 0o1000;

/// One segment as `/proc/sysvipc/shm` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub shmid: u64,
    /// Mode bits, with `SHM_DEST`/`SHM_LOCKED`.
    pub mode: u32,
    pub size: u64,
}

/// Parses `/proc/sysvipc/shm` (a header line, then `key shmid perms size
/// cpid lpid nattch ...` with `perms` in octal).
pub fn parse_segments(path: &std::path::Path, text: &str) -> Result<Vec<Segment>, ProcError> {
    let mut out = Vec::new();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let parsed = (|| {
            Some(Segment {
                shmid: f.get(1)?.parse().ok()?,
                mode: u32::from_str_radix(f.get(2)?, 8).ok()?,
                size: f.get(3)?.parse().ok()?,
            })
        })();
        out.push(parsed.ok_or_else(|| ProcError::Parse { path: path.into(), what: "a SysV segment line", line: line.into() })?);
    }
    Ok(out)
}

/// Refuses the attachments of `pid`'s `vmas` that would not come back
/// (see the module doc).
pub fn check_attachments(pid: i32, vmas: &[Vma]) -> Result<(), DumpError> {
    let attached: Vec<&Vma> = vmas.iter().filter(|v| v.status & status::AREA_SYSVIPC != 0).collect();
    if attached.is_empty() {
        return Ok(());
    }
    let unsupported = |what: String| DumpError::Unsupported { pid, what };
    let ns = |p: &str| std::fs::read_link(p).map_err(|source| ProcError::Io { path: p.into(), source });
    if ns(&format!("/proc/{pid}/ns/ipc"))? != ns("/proc/self/ns/ipc")? {
        return Err(unsupported("SysV shared memory of another IPC namespace (IPC namespaces are not dumped)".into()));
    }
    let path = std::path::PathBuf::from("/proc/sysvipc/shm");
    let segments = parse_segments(&path, &proc::read_text(&path)?)?;
    for v in attached {
        let shmid = v.map.inode;
        let at = format!("SysV shared memory segment {shmid} attached at {:#x}", v.map.start);
        let Some(seg) = segments.iter().find(|s| s.shmid == shmid) else {
            return Err(unsupported(format!("{at}: not listed in {}", path.display())));
        };
        if seg.mode & SHM_DEST != 0 {
            return Err(unsupported(format!("{at}: marked for removal (IPC_RMID), it would go away with the process")));
        }
        if v.map.offset != 0 || v.map.len() != seg.size.next_multiple_of(crate::proc::pagemap::PAGE_SIZE) {
            return Err(unsupported(format!(
                "{at}: {:#x} bytes at offset {:#x} of a {:#x}-byte segment (only whole attachments)",
                v.map.len(),
                v.map.offset,
                seg.size
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_listing() {
        let text = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap\n\
                    \x20        0          7  1600                 65536  1234  1234      2     0     0     0     0 1700000000          0 1700000000                 65536                     0\n";
        let s = parse_segments(std::path::Path::new("shm"), text).unwrap();
        assert_eq!(s, vec![Segment { shmid: 7, mode: 0o1600, size: 65536 }]);
        assert!(parse_segments(std::path::Path::new("shm"), "header\n 0 x 600 1\n").is_err());
    }
}
