//! inotify instances (`FD_TYPES__INOTIFY`: an `inotify_file_entry` in
//! `files.img` with every watch as an `inotify_wd_entry`, as CRIU writes
//! them).
//!
//! Dump: fdinfo names each watched inode by device, inode number and file
//! handle; the handle is opened (`open_by_handle_at` through a mount of the
//! device) to find a path that leads back to the same inode, which goes in
//! `f_handle.path` (CRIU does the same). A watched inode with no such path
//! (unlinked) is refused by name. Events queued and not read are lost, as
//! with CRIU (the kernel has no way to queue them again); criu-rs warns.
//!
//! Restore: `inotify_init1`, then each watch in wd order with
//! `INOTIFY_IOC_SETNEXTWD` so it gets its dumped watch descriptor, on the
//! recorded path (or, in an image without one, the handle opened again).
//! The mask keeps the event bits and `IN_ONESHOT`/`IN_EXCL_UNLINK`.

use super::fdtable::set_status_flags;
use super::{CollectCtx, FdKind, FdProbe, FileDesc, FileDumpError, FilesSink, LoadCtx, OpenCtx, Opened};
use crate::images::pb::{self, FdTypes};
use crate::images::ImageError;
use crate::proc::kind_fdinfo::{parse_inotify, FileHandle};
use crate::proc::mounts::{path_of_handle, read_mountinfo};
use crate::restore::error::{RestoreError, Result, SysContext};
use rustix::fd::{AsRawFd, OwnedFd};
use rustix::fs::inotify;
use std::path::PathBuf;

/// The kind.
pub struct Inotify;

/// `INOTIFY_IOC_SETNEXTWD`: `_IOW('I', 0, __s32)`, the argument passed by
/// value.
const INOTIFY_IOC_SETNEXTWD: rustix::ioctl::Opcode = rustix::ioctl::opcode::write::<i32>(b'I', 0);

/// The mask bits a watch can be added with again.
const MASK_KEPT: u32 = libc::IN_ALL_EVENTS | libc::IN_ONESHOT | libc::IN_EXCL_UNLINK;

/// `fh_entry` carries the handle as this many 64-bit words (CRIU's
/// `fh_entry_sizes.min_entries`).
const FH_WORDS: usize = 16;

/// One watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// Its watch descriptor.
    pub wd: i32,
    /// `IN_*` mask.
    pub mask: u32,
    /// The watched inode: device (kernel encoding), inode number.
    pub s_dev: u32,
    /// Inode number.
    pub ino: u64,
    /// Its file handle.
    pub handle: FileHandle,
    /// A path to it (None: only the handle, in an image from elsewhere).
    pub path: Option<PathBuf>,
}

/// An inotify instance as dumped, or how to recreate it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InotifySet {
    /// Open flags (`O_NONBLOCK`).
    pub flags: i32,
    /// Watches, in wd order.
    pub watches: Vec<Watch>,
}

/// A device number from the kernel's encoding (`major << 20 | minor`).
fn user_dev(kdev: u32) -> u64 {
    libc::makedev(kdev >> 20, kdev & 0xf_ffff)
}

/// The handle bytes as `fh_entry.handle` words (little-endian, padded).
pub(super) fn handle_words(bytes: &[u8]) -> Vec<u64> {
    let mut words: Vec<u64> = bytes
        .chunks(8)
        .map(|c| {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(w)
        })
        .collect();
    words.resize(words.len().max(FH_WORDS), 0);
    words
}

/// `fh_entry.handle` words back to `len` handle bytes.
pub(super) fn handle_bytes(words: &[u64], len: usize) -> Option<Vec<u8>> {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    (len <= bytes.len() && len <= 128).then(|| bytes[..len].to_vec())
}

impl FdKind for Inotify {
    const FD_TYPE: FdTypes = FdTypes::Inotify;
    type Dumped = InotifySet;
    type Plan = InotifySet;
    type OpenState = ();

    fn claims(p: &FdProbe) -> bool {
        p.target == "anon_inode:inotify"
    }

    fn collect(p: &FdProbe, cx: &mut CollectCtx<'_>) -> std::result::Result<InotifySet, FileDumpError> {
        let path = crate::proc::path(p.pid, &format!("fdinfo/{}", p.fd));
        let found = parse_inotify(&p.fdinfo, &path)?;
        let mounts = if found.is_empty() { Vec::new() } else { read_mountinfo(p.pid)? };
        let mut watches = Vec::with_capacity(found.len());
        for w in found {
            let dev = user_dev(w.sdev);
            let path = path_of_handle(&mounts, dev, w.ino, w.handle.handle_type, &w.handle.bytes)
                .map_err(|e| FileDumpError::UnsupportedState { at: p.at(), what: format!("inotify watch {}: {e}", w.wd) })?;
            watches.push(Watch { wd: w.wd, mask: w.mask, s_dev: w.sdev, ino: w.ino, handle: w.handle, path: Some(path) });
        }
        watches.sort_by_key(|w| w.wd);
        let ours = cx.copy_fd(p)?;
        if let Ok(n) = rustix::io::ioctl_fionread(&ours) {
            if n > 0 {
                tracing::warn!(pid = p.pid, fd = p.fd, bytes = n, "inotify events queued and not read are dropped");
            }
        }
        Ok(InotifySet { flags: p.flags() as i32, watches })
    }

    fn write(f: &FileDesc, d: &InotifySet, sink: &mut FilesSink<'_>) -> std::result::Result<(), ImageError> {
        let wd = d
            .watches
            .iter()
            .map(|w| pb::InotifyWdEntry {
                id: Some(f.id),
                i_ino: Some(w.ino),
                mask: Some(w.mask),
                ignored_mask: Some(0),
                s_dev: Some(w.s_dev),
                wd: Some(w.wd as u32),
                f_handle: Some(pb::FhEntry {
                    bytes: Some(w.handle.bytes.len() as u32),
                    r#type: Some(w.handle.handle_type as u32),
                    handle: handle_words(&w.handle.bytes),
                    path: w.path.as_ref().map(|p| p.to_string_lossy().into_owned()),
                    mnt_id: None,
                }),
            })
            .collect();
        let ify = pb::InotifyFileEntry { id: Some(f.id), flags: Some(f.flags), fown: Some(f.fown.entry()), wd };
        sink.push(pb::FileEntry { r#type: Some(FdTypes::Inotify as i32), id: Some(f.id), ify: Some(ify), ..Default::default() });
        Ok(())
    }

    fn load(e: &pb::FileEntry, cx: &LoadCtx<'_>) -> Result<InotifySet> {
        let id = e.id.unwrap_or_default();
        let ify = e.ify.as_ref().ok_or_else(|| cx.bad(format!("file {id:#x} is INOTIFY without inotify_file_entry")))?;
        let mut watches = Vec::with_capacity(ify.wd.len());
        for w in &ify.wd {
            let wd = w.wd.unwrap_or_default();
            let bad = |what: &str| cx.bad(format!("inotify {id:#x}: watch {wd}: {what}"));
            if wd == 0 || wd > i32::MAX as u32 {
                return Err(bad("bad watch descriptor"));
            }
            let fh = w.f_handle.as_ref().ok_or_else(|| bad("no f_handle"))?;
            let len = fh.bytes.unwrap_or_default() as usize;
            let bytes = handle_bytes(&fh.handle, len).ok_or_else(|| bad(&format!("handle of {len} bytes in {} words", fh.handle.len())))?;
            let path = fh.path.as_ref().map(PathBuf::from);
            if path.as_ref().is_some_and(|p| !p.is_absolute()) {
                return Err(bad("relative path"));
            }
            watches.push(Watch {
                wd: wd as i32,
                mask: w.mask.unwrap_or_default(),
                s_dev: w.s_dev.unwrap_or_default(),
                ino: w.i_ino.unwrap_or_default(),
                handle: FileHandle { handle_type: fh.r#type.unwrap_or_default() as i32, bytes },
                path,
            });
        }
        watches.sort_by_key(|w| w.wd);
        if let Some(pair) = watches.windows(2).find(|p| p[0].wd == p[1].wd) {
            return Err(cx.bad(format!("inotify {id:#x}: watch {} listed twice", pair[0].wd)));
        }
        Ok(InotifySet { flags: ify.flags.unwrap_or_default() as i32, watches })
    }

    fn open(p: &InotifySet, _st: &mut (), _cx: &OpenCtx<'_>) -> Result<Opened> {
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC).sys(|| "inotify_init1".into())?;
        set_status_flags(&fd, p.flags)?;
        for w in &p.watches {
            add_watch(&fd, w)?;
        }
        Ok(Opened::Fd(fd))
    }

    fn name(p: &InotifySet) -> String {
        format!("inotify with {} watch(es)", p.watches.len())
    }
}

/// Adds watch `w` to `fd` with its own watch descriptor.
fn add_watch(fd: &OwnedFd, w: &Watch) -> Result<()> {
    let path = match &w.path {
        Some(p) => p.clone(),
        None => {
            let mounts = read_mountinfo(std::process::id() as i32).map_err(|e| RestoreError::Prepare(e.to_string()))?;
            path_of_handle(&mounts, user_dev(w.s_dev), w.ino, w.handle.handle_type, &w.handle.bytes)
                .map_err(|e| RestoreError::Prepare(format!("inotify watch {}: {e}", w.wd)))?
        }
    };
    // SAFETY: INOTIFY_IOC_SETNEXTWD takes the next wd by value.
    let next = unsafe { rustix::ioctl::IntegerSetter::<INOTIFY_IOC_SETNEXTWD>::new_usize(w.wd as usize) };
    // SAFETY: the opcode takes an integer argument (see above).
    unsafe { rustix::ioctl::ioctl(fd, next) }.sys(|| format!("INOTIFY_IOC_SETNEXTWD({})", w.wd))?;
    let flags = inotify::WatchFlags::from_bits_retain(w.mask & MASK_KEPT);
    let got = inotify::add_watch(fd, &path, flags).map_err(|e| RestoreError::FileChanged {
        path: path.clone(),
        problem: format!("cannot watch it again (inotify watch {}): {e}", w.wd),
    })?;
    if got != w.wd {
        return Err(RestoreError::Prepare(format!(
            "inotify watch on {} got descriptor {got}, not {} (fd {})",
            path.display(),
            w.wd,
            fd.as_raw_fd()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_words_round_trip() {
        let bytes = vec![0xe1, 2, 0, 0, 0, 0, 0, 0, 9, 9, 9];
        let words = handle_words(&bytes);
        assert_eq!(words.len(), FH_WORDS);
        assert_eq!(words[0], 0x2e1);
        assert_eq!(words[1], 0x09_0909);
        assert_eq!(handle_bytes(&words, bytes.len()).unwrap(), bytes);
        assert!(handle_bytes(&words, 200).is_none());
    }

    #[test]
    fn watches_come_back_with_their_descriptors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        let w = |wd, path: &std::path::Path| Watch {
            wd,
            mask: libc::IN_MODIFY | libc::IN_ONESHOT,
            s_dev: 0,
            ino: 0,
            handle: FileHandle::default(),
            path: Some(path.to_owned()),
        };
        let set = InotifySet { flags: libc::O_NONBLOCK, watches: vec![w(3, &file), w(7, dir.path())] };
        let Opened::Fd(fd) = Inotify::open(&set, &mut (), &OpenCtx { floor: 3, opened: &Default::default(), memfds: &Default::default(), later: &Default::default() }).unwrap() else {
            panic!("not opened")
        };
        let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).unwrap();
        let got = parse_inotify(&text, "fdinfo".as_ref()).unwrap();
        let mut wds: Vec<(i32, u32)> = got.iter().map(|w| (w.wd, w.mask)).collect();
        wds.sort();
        assert_eq!(wds, vec![(3, libc::IN_MODIFY | libc::IN_ONESHOT), (7, libc::IN_MODIFY | libc::IN_ONESHOT)]);
    }
}
