//! fanotify groups (`FD_TYPES__FANOTIFY`: a `fanotify_file_entry` in
//! `files.img` with every mark as a `fanotify_mark_entry`, as CRIU writes
//! them): the `fanotify_init` flags and event-file flags, and each mark's
//! mask, ignored mask and flags, on an inode (found by file handle, as for
//! inotify, and kept by path) or on a mount (kept by its mount point).
//! Marks on a whole file system are refused by name; so are queued events
//! lost, as with inotify. Restore: `fanotify_init`, then `fanotify_mark`
//! for each mark.

use super::fdtable::set_status_flags;
use super::{CollectCtx, FdKind, FdProbe, FileDesc, FileDumpError, FilesSink, LoadCtx, OpenCtx, Opened};
use crate::images::pb::{self, FdTypes};
use crate::images::ImageError;
use crate::proc::kind_fdinfo::{parse_fanotify, FanotifyTarget, FileHandle};
use crate::proc::mounts::{path_of_handle, read_mountinfo};
use crate::restore::error::{RestoreError, Result, SysContext};
use rustix::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

/// The kind.
pub struct Fanotify;

/// Where a mark is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkOn {
    /// An inode: device (kernel encoding), number, handle.
    Inode {
        /// Device (kernel encoding).
        s_dev: u32,
        /// Inode number.
        ino: u64,
        /// Its handle.
        handle: FileHandle,
    },
    /// A mount, by id.
    Mount {
        /// Mount id.
        mnt_id: i32,
    },
}

/// One mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// Where.
    pub on: MarkOn,
    /// A path to the inode or the mount point.
    pub path: PathBuf,
    /// `FAN_MARK_*` flags kept with the mark.
    pub mflags: u32,
    /// Event mask.
    pub mask: u32,
    /// Ignored-event mask.
    pub ignored_mask: u32,
}

/// A fanotify group as dumped, or how to recreate it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanotifyGroup {
    /// Open flags of the description.
    pub flags: i32,
    /// `fanotify_init` flags.
    pub init_flags: u32,
    /// `fanotify_init` event-file flags.
    pub event_flags: u32,
    /// Its marks.
    pub marks: Vec<Mark>,
}

fn user_dev(kdev: u32) -> u64 {
    libc::makedev(kdev >> 20, kdev & 0xf_ffff)
}

impl FdKind for Fanotify {
    const FD_TYPE: FdTypes = FdTypes::Fanotify;
    type Dumped = FanotifyGroup;
    type Plan = FanotifyGroup;
    type OpenState = ();

    fn claims(p: &FdProbe) -> bool {
        p.target == "anon_inode:[fanotify]"
    }

    fn collect(p: &FdProbe, cx: &mut CollectCtx<'_>) -> std::result::Result<FanotifyGroup, FileDumpError> {
        let path = crate::proc::path(p.pid, &format!("fdinfo/{}", p.fd));
        let st = parse_fanotify(&p.fdinfo, &path)?;
        let mounts = if st.marks.is_empty() { Vec::new() } else { read_mountinfo(p.pid)? };
        let refuse = |what: String| FileDumpError::UnsupportedState { at: p.at(), what };
        let mut marks = Vec::with_capacity(st.marks.len());
        for m in st.marks {
            let (on, path) = match m.target {
                FanotifyTarget::Inode { ino, sdev, handle } => {
                    let path = path_of_handle(&mounts, user_dev(sdev), ino, handle.handle_type, &handle.bytes)
                        .map_err(|e| refuse(format!("fanotify mark: {e}")))?;
                    (MarkOn::Inode { s_dev: sdev, ino, handle }, path)
                }
                FanotifyTarget::Mount { mnt_id } => {
                    let mount = mounts.iter().find(|x| x.id == mnt_id).ok_or_else(|| refuse(format!("fanotify mark on unknown mount {mnt_id}")))?;
                    (MarkOn::Mount { mnt_id }, mount.mount_point.clone())
                }
                FanotifyTarget::Filesystem { sdev } => {
                    return Err(refuse(format!("fanotify mark on a whole file system (device {sdev:#x})")));
                }
            };
            marks.push(Mark { on, path, mflags: m.mflags, mask: m.mask, ignored_mask: m.ignored_mask });
        }
        let ours = cx.copy_fd(p)?;
        if rustix::io::ioctl_fionread(&ours).is_ok_and(|n| n > 0) {
            tracing::warn!(pid = p.pid, fd = p.fd, "fanotify events queued and not read are dropped");
        }
        Ok(FanotifyGroup { flags: p.flags() as i32, init_flags: st.flags, event_flags: st.event_flags, marks })
    }

    fn write(f: &FileDesc, d: &FanotifyGroup, sink: &mut FilesSink<'_>) -> std::result::Result<(), ImageError> {
        let mark = d
            .marks
            .iter()
            .map(|m| {
                let mut e = pb::FanotifyMarkEntry {
                    id: Some(f.id),
                    r#type: None,
                    mflags: Some(m.mflags),
                    mask: Some(m.mask),
                    ignored_mask: Some(m.ignored_mask),
                    s_dev: Some(0),
                    ie: None,
                    me: None,
                };
                let path = Some(m.path.to_string_lossy().into_owned());
                match &m.on {
                    MarkOn::Inode { s_dev, ino, handle } => {
                        e.r#type = Some(pb::MarkType::Inode as i32);
                        e.s_dev = Some(*s_dev);
                        e.ie = Some(pb::FanotifyInodeMarkEntry {
                            i_ino: Some(*ino),
                            f_handle: Some(pb::FhEntry {
                                bytes: Some(handle.bytes.len() as u32),
                                r#type: Some(handle.handle_type as u32),
                                handle: super::inotify::handle_words(&handle.bytes),
                                path,
                                mnt_id: None,
                            }),
                        });
                    }
                    MarkOn::Mount { mnt_id } => {
                        e.r#type = Some(pb::MarkType::Mount as i32);
                        e.me = Some(pb::FanotifyMountMarkEntry { mnt_id: Some(*mnt_id as u32), path });
                    }
                }
                e
            })
            .collect();
        let ffy = pb::FanotifyFileEntry {
            id: Some(f.id),
            flags: Some(f.flags),
            fown: Some(f.fown.entry()),
            faflags: Some(d.init_flags),
            evflags: Some(d.event_flags),
            mark,
        };
        sink.push(pb::FileEntry { r#type: Some(FdTypes::Fanotify as i32), id: Some(f.id), ffy: Some(ffy), ..Default::default() });
        Ok(())
    }

    fn load(e: &pb::FileEntry, cx: &LoadCtx<'_>) -> Result<FanotifyGroup> {
        let id = e.id.unwrap_or_default();
        let f = e.ffy.as_ref().ok_or_else(|| cx.bad(format!("file {id:#x} is FANOTIFY without fanotify_file_entry")))?;
        let mut marks = Vec::with_capacity(f.mark.len());
        for (i, m) in f.mark.iter().enumerate() {
            let bad = |what: &str| cx.bad(format!("fanotify {id:#x}: mark {i}: {what}"));
            let (on, path) = match (m.r#type, &m.ie, &m.me) {
                (Some(t), Some(ie), _) if t == pb::MarkType::Inode as i32 => {
                    let fh = ie.f_handle.as_ref().ok_or_else(|| bad("no f_handle"))?;
                    let len = fh.bytes.unwrap_or_default() as usize;
                    let bytes = super::inotify::handle_bytes(&fh.handle, len).ok_or_else(|| bad("bad handle"))?;
                    let on = MarkOn::Inode {
                        s_dev: m.s_dev.unwrap_or_default(),
                        ino: ie.i_ino.unwrap_or_default(),
                        handle: FileHandle { handle_type: fh.r#type.unwrap_or_default() as i32, bytes },
                    };
                    (on, fh.path.clone())
                }
                (Some(t), _, Some(me)) if t == pb::MarkType::Mount as i32 => {
                    (MarkOn::Mount { mnt_id: me.mnt_id.unwrap_or_default() as i32 }, me.path.clone())
                }
                _ => return Err(bad("neither an inode nor a mount mark")),
            };
            let path = path.map(PathBuf::from).filter(|p| p.is_absolute()).ok_or_else(|| bad("no absolute path"))?;
            marks.push(Mark { on, path, mflags: m.mflags.unwrap_or_default(), mask: m.mask.unwrap_or_default(), ignored_mask: m.ignored_mask.unwrap_or_default() });
        }
        Ok(FanotifyGroup {
            flags: f.flags.unwrap_or_default() as i32,
            init_flags: f.faflags.unwrap_or_default(),
            event_flags: f.evflags.unwrap_or_default(),
            marks,
        })
    }

    fn open(p: &FanotifyGroup, _st: &mut (), _cx: &OpenCtx<'_>) -> Result<Opened> {
        let errno = || rustix::io::Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(rustix::io::Errno::INVAL);
        // The dumped flags as they were: the group keeps them (fdinfo's
        // "fanotify flags" shows FAN_CLOEXEC too); criu-rs's descriptor is
        // made close-on-exec apart.
        // SAFETY: fanotify_init takes two flag words and returns a new fd.
        let raw = unsafe { libc::fanotify_init(p.init_flags, p.event_flags) };
        if raw < 0 {
            return Err(RestoreError::sys(format!("fanotify_init({:#x}, {:#x})", p.init_flags, p.event_flags), errno()));
        }
        // SAFETY: a new fd returned to us, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC).sys(|| "F_SETFD(FD_CLOEXEC) on a fanotify group".into())?;
        set_status_flags(&fd, p.flags)?;
        for m in &p.marks {
            let on = if matches!(m.on, MarkOn::Mount { .. }) { libc::FAN_MARK_MOUNT } else { 0 };
            let path = std::ffi::CString::new(m.path.as_os_str().as_encoded_bytes())
                .map_err(|_| RestoreError::Prepare(format!("fanotify mark path {:?}", m.path)))?;
            // The kept flags (FAN_MARK_IGNORED_SURV_MODIFY) go with the ignored mask.
            for (mask, extra) in [(m.mask, 0), (m.ignored_mask, libc::FAN_MARK_IGNORED_MASK | m.mflags)] {
                if mask == 0 {
                    continue;
                }
                let flags = libc::FAN_MARK_ADD | on | extra;
                // SAFETY: fanotify_mark reads the NUL-terminated path given.
                let r = unsafe { libc::fanotify_mark(fd.as_raw_fd(), flags, mask as u64, libc::AT_FDCWD, path.as_ptr()) };
                if r < 0 {
                    return Err(RestoreError::FileChanged {
                        path: m.path.clone(),
                        problem: format!("cannot mark it again (fanotify, mask {mask:#x}): {}", std::io::Error::last_os_error()),
                    });
                }
            }
        }
        Ok(Opened::Fd(fd))
    }

    fn name(p: &FanotifyGroup) -> String {
        format!("fanotify group with {} mark(s)", p.marks.len())
    }
}
