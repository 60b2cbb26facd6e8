//! `/proc/PID/smaps`: the memory areas of a process with their `VmFlags`.
//!
//! smaps repeats the `maps` line for each area and adds key/value lines; we
//! keep the header fields, `VmFlags` and nothing else.

use super::{parse_err, read_text, Result};

/// Bits for the two-letter `VmFlags` mnemonics we care about.
pub mod vmflag {
    /// `rd` readable.
    pub const READ: u64 = 1 << 0;
    /// `wr` writable.
    pub const WRITE: u64 = 1 << 1;
    /// `ex` executable.
    pub const EXEC: u64 = 1 << 2;
    /// `sh` shared.
    pub const SHARED: u64 = 1 << 3;
    /// `mr` may read.
    pub const MAYREAD: u64 = 1 << 4;
    /// `mw` may write.
    pub const MAYWRITE: u64 = 1 << 5;
    /// `me` may execute.
    pub const MAYEXEC: u64 = 1 << 6;
    /// `ms` may share.
    pub const MAYSHARE: u64 = 1 << 7;
    /// `gd` grows down (stack).
    pub const GROWSDOWN: u64 = 1 << 8;
    /// `pf` pure PFN range.
    pub const PFNMAP: u64 = 1 << 9;
    /// `lo` pages locked in memory.
    pub const LOCKED: u64 = 1 << 10;
    /// `io` memory-mapped I/O.
    pub const IO: u64 = 1 << 11;
    /// `sr` sequential read advised.
    pub const SEQ_READ: u64 = 1 << 12;
    /// `rr` random read advised.
    pub const RAND_READ: u64 = 1 << 13;
    /// `dc` do not copy on fork.
    pub const DONTCOPY: u64 = 1 << 14;
    /// `de` do not expand on remap.
    pub const DONTEXPAND: u64 = 1 << 15;
    /// `nr` swap space not reserved.
    pub const NORESERVE: u64 = 1 << 16;
    /// `ht` hugetlb.
    pub const HUGETLB: u64 = 1 << 17;
    /// `ar` architecture specific.
    pub const ARCH: u64 = 1 << 18;
    /// `wf` wipe on fork.
    pub const WIPEONFORK: u64 = 1 << 19;
    /// `dd` do not include in core dumps.
    pub const DONTDUMP: u64 = 1 << 20;
    /// `mg` mergeable (KSM).
    pub const MERGEABLE: u64 = 1 << 21;
    /// `hg` huge pages advised.
    pub const HUGEPAGE: u64 = 1 << 22;
    /// `nh` no huge pages advised.
    pub const NOHUGEPAGE: u64 = 1 << 23;
    /// `um` userfaultfd missing tracking.
    pub const UFFD_MISSING: u64 = 1 << 24;
    /// `uw` userfaultfd wr-protect tracking.
    pub const UFFD_WP: u64 = 1 << 25;
    /// `sd` soft-dirty.
    pub const SOFTDIRTY: u64 = 1 << 26;
    /// `mm` mixed map.
    pub const MIXEDMAP: u64 = 1 << 27;
    /// `ss` shadow stack.
    pub const SHADOW_STACK: u64 = 1 << 28;
    /// `sl` sealed.
    pub const SEALED: u64 = 1 << 29;
    /// `lf` lock on fault.
    pub const LOCKONFAULT: u64 = 1 << 30;
    /// `ac` accountable.
    pub const ACCOUNT: u64 = 1 << 31;
    /// `dp` droppable (`MAP_DROPPABLE`: the kernel may drop its pages).
    pub const DROPPABLE: u64 = 1 << 32;

    /// Bits the kernel changes behind the process's back or ours
    /// (userfaultfd registration, soft-dirty clearing): never compared.
    pub const VOLATILE: u64 = UFFD_MISSING | UFFD_WP | SOFTDIRTY;
    /// Bits a process can change on a whole area without changing its
    /// `maps` line (`madvise`, `mlock`, `mseal`).
    pub const ADVICE: u64 =
        SEQ_READ | RAND_READ | DONTCOPY | WIPEONFORK | DONTDUMP | MERGEABLE | HUGEPAGE | NOHUGEPAGE | LOCKED | LOCKONFAULT | SEALED;

    /// Maps a mnemonic to its bit (0 for the ones we do not track).
    pub fn from_mnemonic(m: &str) -> u64 {
        match m {
            "rd" => READ,
            "wr" => WRITE,
            "ex" => EXEC,
            "sh" => SHARED,
            "mr" => MAYREAD,
            "mw" => MAYWRITE,
            "me" => MAYEXEC,
            "ms" => MAYSHARE,
            "gd" => GROWSDOWN,
            "pf" => PFNMAP,
            "lo" => LOCKED,
            "io" => IO,
            "sr" => SEQ_READ,
            "rr" => RAND_READ,
            "dc" => DONTCOPY,
            "de" => DONTEXPAND,
            "nr" => NORESERVE,
            "ht" => HUGETLB,
            "ar" => ARCH,
            "wf" => WIPEONFORK,
            "dd" => DONTDUMP,
            "mg" => MERGEABLE,
            "hg" => HUGEPAGE,
            "nh" => NOHUGEPAGE,
            "um" => UFFD_MISSING,
            "uw" => UFFD_WP,
            "sd" => SOFTDIRTY,
            "mm" => MIXEDMAP,
            "ss" => SHADOW_STACK,
            "sl" => SEALED,
            "lf" => LOCKONFAULT,
            "ac" => ACCOUNT,
            "dp" => DROPPABLE,
            _ => 0,
        }
    }
}

/// One memory area as `/proc/PID/smaps` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `r` permission.
    pub read: bool,
    /// `w` permission.
    pub write: bool,
    /// `x` permission.
    pub exec: bool,
    /// `s` (shared) rather than `p` (private).
    pub shared: bool,
    /// File offset of `start`.
    pub offset: u64,
    /// Device of the backing file (major, minor).
    pub dev: (u32, u32),
    /// Inode of the backing file (0 for anonymous memory).
    pub inode: u64,
    /// The path or pseudo-name (`[stack]`, `[vdso]`, ...), empty if none.
    /// A trailing ` (deleted)` is removed and reported in `deleted`.
    pub path: String,
    /// The backing file was unlinked.
    pub deleted: bool,
    /// `VmFlags`, as [`vmflag`] bits.
    pub vmflags: u64,
}

impl MapEntry {
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    /// Whether the area is empty (never, for a real mapping).
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
    /// Whether a `VmFlags` bit is set.
    pub fn has(&self, flag: u64) -> bool {
        self.vmflags & flag != 0
    }
    /// Whether the area has no backing file (pseudo-names count as none).
    pub fn is_anon(&self) -> bool {
        self.inode == 0
    }
    /// Whether `other` has the same `maps` line (`VmFlags` aside).
    pub fn same_line(&self, other: &MapEntry) -> bool {
        MapEntry { vmflags: other.vmflags, ..self.clone() } == *other
    }
}

/// `maps` (read now) with the `VmFlags` of `earlier` (smaps read before,
/// sorted by address, as the kernel lists them): None unless every area
/// of `maps` has the same line in `earlier`. Takes the page counting of
/// smaps out of a freeze (see [`crate::dump::live`]); whatever `madvise`
/// changed in between, [`flags_changed`] finds afterwards.
pub fn with_flags_of(mut maps: Vec<MapEntry>, earlier: &[MapEntry]) -> Option<Vec<MapEntry>> {
    for m in &mut maps {
        let i = earlier.binary_search_by_key(&m.start, |e| e.start).ok()?;
        if !earlier[i].same_line(m) {
            return None;
        }
        m.vmflags = earlier[i].vmflags;
    }
    Some(maps)
}

/// The first area of `then` whose `VmFlags` differ in `now` (smaps read
/// later), as (start, end, flags then, flags now): against an area of `now`
/// with the same line, every bit but [`vmflag::VOLATILE`]; against one that
/// changed shape but overlaps, the bits no `maps` line shows
/// ([`vmflag::ADVICE`]).
pub fn flags_changed(then: &[MapEntry], now: &[MapEntry]) -> Option<(u64, u64, u64, u64)> {
    for t in then {
        let from = now.partition_point(|n| n.end <= t.start);
        for n in now[from..].iter().take_while(|n| n.start < t.end) {
            let mask = if n.same_line(t) { !vmflag::VOLATILE } else { vmflag::ADVICE };
            if (t.vmflags ^ n.vmflags) & mask != 0 {
                return Some((t.start, t.end, t.vmflags, n.vmflags));
            }
        }
    }
    None
}

/// Parses one `maps` header line.
fn parse_header(line: &str) -> Option<MapEntry> {
    let mut rest = line;
    let mut field = || {
        let t = rest.trim_start();
        let end = t.find(' ').unwrap_or(t.len());
        let (f, r) = t.split_at(end);
        rest = r;
        f
    };
    let range = field();
    let perms = field().as_bytes().to_vec();
    let offset = field();
    let dev = field();
    let inode = field();
    let (s, e) = range.split_once('-')?;
    let (maj, min) = dev.split_once(':')?;
    if perms.len() != 4 {
        return None;
    }
    let mut path = rest.trim_start().to_owned();
    let deleted = path.ends_with(" (deleted)");
    if deleted {
        path.truncate(path.len() - " (deleted)".len());
    }
    Some(MapEntry {
        start: super::hex(s)?,
        end: super::hex(e)?,
        read: perms[0] == b'r',
        write: perms[1] == b'w',
        exec: perms[2] == b'x',
        shared: perms[3] == b's',
        offset: super::hex(offset)?,
        dev: (super::hex(maj)? as u32, super::hex(min)? as u32),
        inode: inode.parse().ok()?,
        path,
        deleted,
        vmflags: 0,
    })
}

/// Whether a smaps line starts a new area (`start-end ...`) rather than
/// being a `Key: value` line.
fn is_header(line: &str) -> bool {
    let first = line.split(' ').next().unwrap_or("");
    first.contains('-') && !first.ends_with(':')
}

/// Parses smaps text.
pub fn parse_smaps(text: &str, path: &std::path::Path) -> Result<Vec<MapEntry>> {
    let mut out: Vec<MapEntry> = Vec::new();
    for line in text.lines() {
        if is_header(line) {
            out.push(parse_header(line).ok_or_else(|| parse_err(path, "a maps line", line))?);
        } else if let Some(flags) = line.strip_prefix("VmFlags:") {
            let cur = out.last_mut().ok_or_else(|| parse_err(path, "VmFlags after a maps line", line))?;
            cur.vmflags = flags.split_whitespace().map(vmflag::from_mnemonic).fold(0, |a, b| a | b);
        }
    }
    Ok(out)
}

/// Reads `/proc/PID/smaps`.
pub fn read_smaps(pid: i32) -> Result<Vec<MapEntry>> {
    let path = super::path(pid, "smaps");
    parse_smaps(&read_text(&path)?, &path)
}

/// Reads `/proc/PID/maps` (no `VmFlags`: cheaper than [`read_smaps`],
/// which counts every area's pages).
pub fn read_maps(pid: i32) -> Result<Vec<MapEntry>> {
    let path = super::path(pid, "maps");
    parse_smaps(&read_text(&path)?, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_headers_and_flags() {
        let text = "\
7f0000000000-7f0000002000 rw-p 00001000 fe:01 1234                       /tmp/a file (deleted)
Size:                  8 kB
VmFlags: rd wr mr mw me gd ac 
7ffc00000000-7ffc00021000 rw-s 00000000 00:00 0                          [stack]
VmFlags: rd wr sh mr mw ms dc
";
        let m = parse_smaps(text, std::path::Path::new("x")).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].start, 0x7f0000000000);
        assert_eq!(m[0].len(), 0x2000);
        assert_eq!(m[0].offset, 0x1000);
        assert_eq!(m[0].dev, (0xfe, 1));
        assert_eq!(m[0].inode, 1234);
        assert_eq!(m[0].path, "/tmp/a file");
        assert!(m[0].deleted && m[0].read && m[0].write && !m[0].exec && !m[0].shared);
        assert!(m[0].has(vmflag::GROWSDOWN) && !m[0].has(vmflag::SHARED));
        assert!(m[1].shared && m[1].has(vmflag::DONTCOPY) && m[1].has(vmflag::MAYSHARE));
        assert_eq!(m[1].path, "[stack]");
    }

    #[test]
    fn reads_own_smaps() {
        let m = read_smaps(std::process::id() as i32).unwrap();
        assert!(m.iter().any(|e| e.path == "[stack]" && e.has(vmflag::GROWSDOWN)));
    }

    #[test]
    fn flags_carried_over_and_changes_found() {
        let earlier = parse_smaps(
            "1000-3000 rw-p 00000000 00:00 0 \nVmFlags: rd wr mr mw me ac\n5000-6000 r--p 00000000 fe:01 7 /lib/x\nVmFlags: rd mr\n",
            std::path::Path::new("x"),
        )
        .unwrap();
        let maps = parse_smaps("1000-3000 rw-p 00000000 00:00 0 \n5000-6000 r--p 00000000 fe:01 7 /lib/x\n", std::path::Path::new("x")).unwrap();
        let got = with_flags_of(maps.clone(), &earlier).unwrap();
        assert_eq!(got, earlier);
        // Another shape (split by mprotect), another line: not carried over.
        let split = parse_smaps("1000-2000 r--p 00000000 00:00 0 \n2000-3000 rw-p 00000000 00:00 0 \n", std::path::Path::new("x")).unwrap();
        assert!(with_flags_of(split, &earlier).is_none());
        // Unchanged but for our own userfaultfd: no change.
        let mut now = earlier.clone();
        now[0].vmflags |= vmflag::UFFD_WP;
        assert_eq!(flags_changed(&earlier, &now), None);
        // madvise(MADV_DONTDUMP) on the whole area.
        now[0].vmflags |= vmflag::DONTDUMP;
        assert_eq!(flags_changed(&earlier, &now).map(|c| c.0), Some(0x1000));
        // Split by mprotect since: only the advice bits count.
        let mut split = parse_smaps(
            "1000-2000 r--p 00000000 00:00 0 \nVmFlags: rd mr mw me\n2000-3000 rw-p 00000000 00:00 0 \nVmFlags: rd wr mr mw me ac\n",
            std::path::Path::new("x"),
        )
        .unwrap();
        assert_eq!(flags_changed(&earlier, &split), None);
        split[1].vmflags |= vmflag::HUGEPAGE;
        assert_eq!(flags_changed(&earlier, &split).map(|c| c.0), Some(0x1000));
    }
}
