//! Memory areas: `/proc/PID/smaps` against `mm-PID.img`'s VMAs.
//!
//! Both sides become lists of areas (bounds, protection, shared or
//! private, what backs it, the file offset where one matters, the
//! `MAP_GROWSDOWN|MAP_LOCKED|MAP_NORESERVE` flags and the madvise advice
//! `VmFlags` shows), adjacent areas alike in everything are joined (the
//! kernel merges and splits VMAs as it likes), and the lists must be
//! equal. `[vsyscall]` is the kernel's and is left out; a dumped vDSO may
//! come back as an anonymous copy of its pages; a task dumped without a
//! vDSO may keep the kernel's.

use super::{proc_err, Check, TaskImages};
use crate::dump::vmas::{classify, MADV_SHOWN, MAP_SHOWN};
use crate::images::consts::vma_status as st;
use crate::images::pb;
use crate::proc::maps::{read_smaps, MapEntry};
use std::fmt;

/// What backs an area.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Backing {
    /// Private anonymous memory (`[heap]` and `[stack]` too: the kernel
    /// names them from the mm's fields, which [`super::task`] compares).
    Anon,
    Vdso,
    Vvar,
    /// `MAP_SHARED|MAP_ANONYMOUS` (the kernel's `/dev/zero` object).
    SharedAnon,
    /// A SysV shared memory attachment.
    SysV,
    /// A memfd, by name.
    Memfd(String),
    /// A file by path; `None` when the image names a file restored under
    /// another name (ghost or linked-back files).
    File(Option<String>),
    /// A file that was deleted after the restore opened it (live only).
    Deleted(String),
    /// SysV shared memory, sockets, anything else.
    Other(String),
}

/// One area, as compared.
#[derive(Debug, Clone)]
struct Area {
    start: u64,
    end: u64,
    prot: u32,
    shared: bool,
    backing: Backing,
    /// File offset in bytes, for areas backed by an object.
    pgoff: Option<u64>,
    /// `MAP_SHOWN` bits.
    flags: u32,
    /// `MADV_SHOWN` bits.
    madv: u64,
}

impl Area {
    /// Whether `next` continues `self` with the same attributes.
    fn joins(&self, next: &Area) -> bool {
        self.end == next.start
            && self.prot == next.prot
            && self.shared == next.shared
            && self.backing == next.backing
            && self.flags == next.flags
            && self.madv == next.madv
            && match (self.pgoff, next.pgoff) {
                (Some(a), Some(b)) => a.checked_add(self.end.wrapping_sub(self.start)) == Some(b),
                (None, None) => true,
                _ => false,
            }
    }

    fn same(&self, o: &Area) -> bool {
        self.start == o.start && self.end == o.end && self.joins_attrs(o)
    }

    fn joins_attrs(&self, o: &Area) -> bool {
        self.prot == o.prot && self.shared == o.shared && self.backing == o.backing && self.flags == o.flags && self.madv == o.madv && self.pgoff == o.pgoff
    }
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = |bit: u32, c: char| if self.prot & bit != 0 { c } else { '-' };
        write!(
            f,
            "{:x}-{:x} {}{}{}{}",
            self.start,
            self.end,
            b(1, 'r'),
            b(2, 'w'),
            b(4, 'x'),
            if self.shared { 's' } else { 'p' }
        )?;
        match &self.backing {
            Backing::Anon => write!(f, " anon")?,
            Backing::Vdso => write!(f, " [vdso]")?,
            Backing::Vvar => write!(f, " [vvar]")?,
            Backing::SharedAnon => write!(f, " /dev/zero")?,
            Backing::SysV => write!(f, " SysV shared memory")?,
            Backing::Memfd(n) => write!(f, " memfd:{n}")?,
            Backing::File(Some(p)) => write!(f, " {p}")?,
            Backing::File(None) => write!(f, " (a ghost or linked-back file)")?,
            Backing::Deleted(p) => write!(f, " {p} (deleted)")?,
            Backing::Other(p) => write!(f, " {p}")?,
        }
        if let Some(off) = self.pgoff {
            write!(f, " @{off:#x}")?;
        }
        if self.flags != 0 {
            write!(f, " flags {:#x}", self.flags)?;
        }
        if self.madv != 0 {
            write!(f, " madv {:#x}", self.madv)?;
        }
        Ok(())
    }
}

pub fn check(t: &TaskImages) -> Check {
    let smaps = read_smaps(t.pid).map_err(proc_err)?;
    let image: Vec<Area> = t.mm.vmas.iter().filter_map(|v| image_area(t, v)).collect();
    let mut live: Vec<Area> = smaps.iter().filter(|m| m.path != "[vsyscall]").map(live_area).collect();
    // Images without a vDSO (made by hand, or of a task that had none)
    // leave the kernel's own to the restored task.
    if !image.iter().any(|v| matches!(v.backing, Backing::Vdso | Backing::Vvar)) {
        live.retain(|a| !matches!(a.backing, Backing::Vdso | Backing::Vvar));
    }
    for a in live.iter_mut() {
        let Some(v) = image.iter().find(|v| v.start <= a.start && a.end <= v.end) else { continue };
        match (&a.backing, &v.backing) {
            // A vDSO restored as a copy of the dumped one is anonymous
            // memory.
            (Backing::Anon, Backing::Vdso) => a.backing = Backing::Vdso,
            // A ghost file is restored under a name of its own.
            (Backing::File(_) | Backing::Deleted(_), Backing::File(None)) => a.backing = Backing::File(None),
            _ => {}
        }
    }
    compare(&join(live), &join(image))
}

/// The first difference between two joined lists.
fn compare(live: &[Area], image: &[Area]) -> Check {
    for i in 0..live.len().max(image.len()) {
        match (live.get(i), image.get(i)) {
            (Some(l), Some(m)) if l.same(m) => continue,
            (Some(l), Some(m)) => return Err(format!("/proc maps {l}, image {m}")),
            (Some(l), None) => return Err(format!("/proc maps {l}, not in the image")),
            (None, Some(m)) => return Err(format!("/proc maps has nothing for image {m}")),
            (None, None) => break,
        }
    }
    Ok(())
}

/// Joins adjacent areas alike in everything.
fn join(mut v: Vec<Area>) -> Vec<Area> {
    v.sort_by_key(|a| a.start);
    let mut out: Vec<Area> = Vec::with_capacity(v.len());
    for a in v {
        match out.last_mut() {
            Some(last) if last.joins(&a) => last.end = a.end,
            _ => out.push(a),
        }
    }
    out
}

fn live_area(m: &MapEntry) -> Area {
    let c = classify(m);
    let backing = match m.path.as_str() {
        "[vdso]" => Backing::Vdso,
        "[vvar]" | "[vvar_vclock]" => Backing::Vvar,
        _ if m.is_anon() => Backing::Anon,
        // Shared anonymous memory, mapped shared or (through map_files)
        // privately.
        p if m.deleted && p.starts_with("/dev/zero") => Backing::SharedAnon,
        p if m.shared && p.starts_with("/SYSV") => Backing::SysV,
        p if m.deleted && p.starts_with("/memfd:") => Backing::Memfd(p["/memfd:".len()..].to_string()),
        p if m.deleted => Backing::Deleted(p.to_string()),
        p => Backing::File(Some(p.to_string())),
    };
    let pgoff = match backing {
        Backing::SharedAnon | Backing::SysV | Backing::Memfd(_) | Backing::File(_) | Backing::Deleted(_) => Some(m.offset),
        _ => None,
    };
    Area {
        start: m.start,
        end: m.end,
        prot: c.prot,
        shared: m.shared,
        backing,
        pgoff,
        flags: c.mmap_flags & MAP_SHOWN,
        madv: c.madv & MADV_SHOWN,
    }
}

fn image_area(t: &TaskImages, v: &pb::VmaEntry) -> Option<Area> {
    let status = v.status.unwrap_or_default();
    // Guard regions are pages inside another VMA, not VMAs of their own.
    if status & (st::AREA_VSYSCALL | st::AREA_GUARD) != 0 {
        return None;
    }
    let id = v.shmid.unwrap_or_default();
    let file = t.tree.files.get(&(id as u32));
    let backing = if status & st::AREA_VVAR != 0 {
        Backing::Vvar
    } else if status & st::AREA_VDSO != 0 {
        Backing::Vdso
    } else if status & st::AREA_SYSVIPC != 0 {
        Backing::SysV
    } else if status & st::AREA_MEMFD != 0 {
        let inode = file.and_then(|f| f.memfd.as_ref()).and_then(|m| m.inode_id).and_then(|i| t.tree.memfds.get(&(i as u64)));
        match inode.and_then(|i| i.name.as_deref()) {
            Some(n) if n.starts_with("/dev/zero") => Backing::SharedAnon,
            Some(n) => Backing::Memfd(n.to_string()),
            None => Backing::Other(format!("memfd {id:#x}")),
        }
    } else if status & st::ANON_SHARED != 0 {
        Backing::SharedAnon
    } else if status & (st::FILE_PRIVATE | st::FILE_SHARED) != 0 {
        match file.and_then(|f| f.reg.as_ref()).and_then(|r| r.name.as_deref()) {
            _ if t.tree.remapped.contains(&(id as u32)) => Backing::File(None),
            Some(n) => Backing::File(Some(n.to_string())),
            None => Backing::Other(format!("file {id:#x}")),
        }
    } else if status & st::ANON_PRIVATE != 0 {
        Backing::Anon
    } else {
        Backing::Other(format!("status {status:#x}"))
    };
    let pgoff = match backing {
        Backing::SharedAnon | Backing::SysV | Backing::Memfd(_) | Backing::File(_) => Some(v.pgoff.unwrap_or_default()),
        _ => None,
    };
    let flags = v.flags.unwrap_or_default();
    Some(Area {
        start: v.start.unwrap_or_default(),
        end: v.end.unwrap_or_default(),
        prot: v.prot.unwrap_or_default() & 7,
        shared: flags & libc::MAP_SHARED as u32 != 0,
        backing,
        pgoff,
        flags: flags & MAP_SHOWN,
        madv: v.madv.unwrap_or_default() & MADV_SHOWN,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area(start: u64, end: u64, prot: u32, backing: Backing, pgoff: Option<u64>) -> Area {
        Area { start, end, prot, shared: false, backing, pgoff, flags: 0, madv: 0 }
    }

    #[test]
    fn areas_alike_join_and_differences_are_named() {
        let file = || Backing::File(Some("/lib/x.so".into()));
        // The kernel may split what was one VMA: joined again, offsets
        // following on.
        let live = join(vec![area(0x2000, 0x3000, 5, file(), Some(0x1000)), area(0x1000, 0x2000, 5, file(), Some(0))]);
        let image = join(vec![area(0x1000, 0x3000, 5, file(), Some(0))]);
        assert_eq!(compare(&live, &image), Ok(()));
        // Offsets that do not follow on are two areas.
        let gap = join(vec![area(0x1000, 0x2000, 5, file(), Some(0)), area(0x2000, 0x3000, 5, file(), Some(0x5000))]);
        assert_eq!(gap.len(), 2);
        assert!(compare(&gap, &image).is_err());
        // Protection, backing and bounds differences name both sides.
        let err = compare(&[area(0x1000, 0x3000, 3, Backing::Anon, None)], &[area(0x1000, 0x3000, 1, Backing::Anon, None)]).unwrap_err();
        assert_eq!(err, "/proc maps 1000-3000 rw-p anon, image 1000-3000 r--p anon");
        let err = compare(&[], &[area(0x1000, 0x2000, 1, Backing::Anon, None)]).unwrap_err();
        assert!(err.contains("nothing for image 1000-2000"), "{err}");
        let err = compare(&[area(0x1000, 0x2000, 1, Backing::Anon, None)], &[]).unwrap_err();
        assert!(err.contains("not in the image"), "{err}");
        let mut adv = area(0x1000, 0x2000, 3, Backing::Anon, None);
        adv.madv = 1 << libc::MADV_DONTFORK;
        assert!(compare(&[area(0x1000, 0x2000, 3, Backing::Anon, None)], &[adv]).unwrap_err().contains("madv 0x400"));
    }
}
