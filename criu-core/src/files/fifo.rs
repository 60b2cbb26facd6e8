//! Named pipe ends (`FD_TYPES__FIFO`): a `fifo_entry` (pipe id = the
//! FIFO's inode) and a REG entry (`regf_id`) naming its path; queued bytes
//! go once per FIFO to `fifo-data.img`. Restore holds one read-write end
//! per FIFO while its descriptions are opened (so opening never blocks and
//! the buffer survives), puts the bytes back through it, then lets it go.
//! A FIFO removed while open is a ghost of its path entry (as CRIU has
//! it): made again under a free name for its keeper, removed at once; its
//! ends are opened through the keeper.

use super::fdtable::set_status_flags;
use super::pipe::{fill_pipe, peek_pipe, read_queued, write_queued, PipeData};
use super::reg::{ghost_of, read_ghost, reg_entry, reg_file, strip_deleted, with_ghost, write_ghost_remap, Ghost, GhostFile, RegFile};
use super::{CollectCtx, FdKind, FdProbe, FileDesc, FileDumpError, FilesSink, LoadCtx, OpenCtx, Opened, SideImage};
use crate::images::pb::{self, FdTypes};
use crate::images::{ImageDir, ImageError, ImageKind};
use crate::restore::error::{RestoreError, Result, SysContext};
use rustix::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use rustix::fs::{Mode, OFlags};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

/// The kind.
pub struct Fifo;

/// A FIFO end as dumped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FifoDumped {
    /// The FIFO's path.
    pub path: String,
    /// The FIFO's inode number.
    pub pipe_ino: u64,
    /// Capacity and queued bytes (first end seen only).
    pub data: Option<PipeData>,
    /// `st_mode`.
    pub mode: u32,
    /// Id of the regular-file entry naming the FIFO's path.
    pub regf_id: u32,
    /// Removed while open: its inode's (dev, ino), and its ghost (owner,
    /// mode, times) with the first end collected.
    pub unlinked: Option<((u64, u64), Option<Ghost>)>,
}

/// How to reopen a FIFO end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FifoPlan {
    /// Its path and flags.
    pub file: RegFile,
    /// Shared by every end of one FIFO.
    pub pipe_id: u32,
    /// Capacity and bytes to put back, once per FIFO.
    pub data: PipeData,
    /// Removed while open: made again from its ghost image (by id).
    pub ghost: Option<(u32, Rc<GhostFile>)>,
}

/// One read-write end per FIFO, held while its descriptions are opened.
#[derive(Default)]
pub struct Keepers(BTreeMap<u32, OwnedFd>);

impl FdKind for Fifo {
    const FD_TYPE: FdTypes = FdTypes::Fifo;
    type Dumped = FifoDumped;
    type Plan = FifoPlan;
    type OpenState = Keepers;

    fn claims(p: &FdProbe) -> bool {
        p.file_type() == libc::S_IFIFO && !p.target.starts_with("pipe:[")
    }

    fn collect(p: &FdProbe, cx: &mut CollectCtx<'_>) -> std::result::Result<FifoDumped, FileDumpError> {
        let ino = p.md.ino();
        let data = if cx.seen.first_sight(FdTypes::Pipe, ino) { Some(peek_pipe(p)?) } else { None };
        let regf_id = cx.alloc_id();
        let (path, deleted) = strip_deleted(&p.target);
        let unlinked = if deleted && p.md.nlink() == 0 {
            let dev_ino = (p.md.dev(), ino);
            let ghost = if cx.seen.first_ghost(dev_ino.0, dev_ino.1) {
                Some(read_ghost(p.pid, &format!("fd/{}", p.fd), &p.at(), &p.md, cx.opts.ghost_limit)?)
            } else {
                None
            };
            Some((dev_ino, ghost))
        } else {
            None
        };
        Ok(FifoDumped { path: path.to_owned(), pipe_ino: ino, data, mode: p.md.mode(), regf_id, unlinked })
    }

    fn write(f: &FileDesc, d: &FifoDumped, sink: &mut FilesSink<'_>) -> std::result::Result<(), ImageError> {
        let pipe_id = d.pipe_ino as u32;
        let fifo = pb::FifoEntry { id: Some(f.id), pipe_id: Some(pipe_id), regf_id: Some(d.regf_id) };
        sink.push(pb::FileEntry { r#type: Some(FdTypes::Fifo as i32), id: Some(f.id), fifo: Some(fifo), ..Default::default() });
        write_queued(sink, ImageKind::FifoData, pipe_id, d.data.as_ref())?;
        // The FIFO's path, as the regular-file entry `regf_id` names it.
        let mut reg = reg_entry(d.regf_id, f.flags, &f.fown, &d.path);
        reg.mode = Some(d.mode);
        sink.push(pb::FileEntry { r#type: Some(FdTypes::Reg as i32), id: Some(d.regf_id), reg: Some(reg), ..Default::default() });
        if let Some((dev_ino, ghost)) = &d.unlinked {
            write_ghost_remap(sink, d.regf_id, *dev_ino, ghost.as_ref())?;
        }
        Ok(())
    }

    fn load(e: &pb::FileEntry, cx: &LoadCtx<'_>) -> Result<FifoPlan> {
        let id = e.id.unwrap_or_default();
        let fifo = e.fifo.as_ref();
        let (pipe_id, regf_id) = (fifo.and_then(|f| f.pipe_id), fifo.and_then(|f| f.regf_id).unwrap_or(id));
        let reg = cx.files.get(&regf_id).and_then(|f| f.reg.as_ref());
        let (Some(pipe_id), Some(reg)) = (pipe_id, reg) else {
            return Err(cx.bad(format!("FIFO {id:#x} without its pipe id or path entry {regf_id:#x}")));
        };
        let file = RegFile { pos: 0, size: None, ..reg_file(reg) };
        let data = cx.side::<FifoData>()?.0.get(&pipe_id).cloned().unwrap_or_default();
        let ghost = ghost_of(regf_id, cx)?;
        if let Some((gid, g)) = &ghost {
            if g.ghost.mode & libc::S_IFMT != libc::S_IFIFO {
                return Err(cx.bad(format!("FIFO {id:#x}: its ghost image {gid} is not a FIFO (mode {:o})", g.ghost.mode)));
            }
        }
        Ok(FifoPlan { file, pipe_id, data, ghost })
    }

    fn open(p: &FifoPlan, st: &mut Keepers, _cx: &OpenCtx<'_>) -> Result<Opened> {
        if let std::collections::btree_map::Entry::Vacant(v) = st.0.entry(p.pipe_id) {
            let keeper = match &p.ghost {
                Some((_, g)) => with_ghost(&p.file.path, &g.ghost, |at| open_keeper(&RegFile { path: at.to_path_buf(), ..p.file.clone() }, p.pipe_id, &p.data))?,
                None => open_keeper(&p.file, p.pipe_id, &p.data)?,
            };
            v.insert(keeper);
        }
        let r = &p.file;
        let path = match &p.ghost {
            Some(_) => std::path::PathBuf::from(format!("/proc/self/fd/{}", st.0[&p.pipe_id].as_raw_fd())),
            None => r.path.clone(),
        };
        let flags = OFlags::from_bits_retain((r.flags & libc::O_ACCMODE) as u32) | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = rustix::fs::open(&path, flags, Mode::empty())
            .map_err(|e| RestoreError::FileChanged { path: r.path.clone(), problem: format!("cannot open the FIFO: {e}") })?;
        set_status_flags(&fd, r.flags)?;
        Ok(Opened::Fd(fd))
    }

    fn name(p: &FifoPlan) -> String {
        p.file.path.display().to_string()
    }
}

/// `fifo-data.img`.
struct FifoData(BTreeMap<u32, PipeData>);

impl SideImage for FifoData {
    fn read(images: &ImageDir) -> Result<Self> {
        read_queued(images, ImageKind::FifoData).map(FifoData)
    }
}

/// `open(path, O_RDWR | O_NONBLOCK)` on a FIFO (never blocks, keeps the
/// FIFO's buffer alive); gives it its capacity and queued bytes through it.
fn open_keeper(r: &RegFile, pipe_id: u32, data: &PipeData) -> Result<OwnedFd> {
    let fd = rustix::fs::open(&r.path, OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| RestoreError::FileChanged { path: r.path.clone(), problem: format!("cannot open the FIFO: {e}") })?;
    let st = rustix::fs::fstat(&fd).sys(|| format!("fstat({})", r.path.display()))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFIFO {
        return Err(RestoreError::FileChanged { path: r.path.clone(), problem: "no longer a FIFO".into() });
    }
    fill_pipe(&fd, pipe_id, data)?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::roundtrip::{crit_decodes, desc, roundtrip, roundtrip_files};
    use crate::files::Fown;
    use crate::files::{DescPlan, FileKind, LoadOptions};

    #[test]
    fn fifo_and_its_path_round_trip() {
        let data = PipeData { size: Some(4096), bytes: b"xy".to_vec() };
        let d = FifoDumped { path: "/tmp/ff".into(), pipe_ino: 9, data: Some(data.clone()), mode: libc::S_IFIFO | 0o600, regf_id: 5, unlinked: None };
        let (plans, tmp) = roundtrip(&[desc(1, libc::O_RDONLY, FileKind::Fifo(d))], &LoadOptions::default());
        let file = RegFile { path: "/tmp/ff".into(), flags: libc::O_RDONLY, pos: 0, size: None, mode: Some(libc::S_IFIFO | 0o600) };
        assert_eq!(plans.unwrap()[&1], DescPlan::Fifo(FifoPlan { file, pipe_id: 9, data, ghost: None }));
        crit_decodes(&tmp.path().join("fifo-data.img"));
    }

    #[test]
    fn owner_of_a_fifo_travels_in_its_path_entry() {
        let d = FifoDumped { path: "/tmp/ff".into(), pipe_ino: 9, data: None, mode: libc::S_IFIFO | 0o600, regf_id: 5, unlinked: None };
        let mut f = desc(1, libc::O_RDONLY, FileKind::Fifo(d));
        f.fown = Fown { uid: 0, euid: 1000, signum: 0, pid_type: 0, pid: 77 };
        let (files, _tmp) = roundtrip_files(&[f.clone()], &LoadOptions::default());
        assert_eq!(files.unwrap().owners, [(1, f.fown)].into());
    }
}
