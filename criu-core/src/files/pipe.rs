//! Anonymous pipe ends (`FD_TYPES__PIPE`). Both ends of one pipe carry the
//! same `pipe_id` (the pipe's inode); on the first end seen, the pipe's
//! capacity (`F_GETPIPE_SZ`) and the bytes queued in it (copied with
//! `tee(2)`, so the pipe keeps them) are written once to `pipes-data.img`,
//! as CRIU does. Restore makes one pipe per `pipe_id` with that capacity
//! (`F_SETPIPE_SZ`, checked: above `fs.pipe-max-size` it needs
//! CAP_SYS_RESOURCE), refills it, and opens further descriptions of an end
//! through `/proc/self/fd`. A packet-mode (`O_DIRECT`) end of a pipe with
//! bytes queued is refused: the packet boundaries cannot be seen.

use super::fdtable::{set_status_flags, write_all};
use super::{CollectCtx, FdKind, FdProbe, FileDesc, FileDumpError, FilesSink, LoadCtx, OpenCtx, Opened, SideImage};
use crate::images::pb::{self, FdTypes};
use crate::images::{ImageDir, ImageError, ImageKind};
use crate::restore::error::{RestoreError, Result, SysContext};
use rustix::fd::{AsRawFd, OwnedFd, RawFd};
use rustix::fs::{Mode, OFlags};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

/// The kind.
pub struct Pipe;

/// A pipe end as dumped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipeDumped {
    /// The pipe's inode number (shared by both ends).
    pub pipe_ino: u64,
    /// Capacity and queued bytes (recorded once per pipe, on the first end seen).
    pub data: Option<PipeData>,
}

/// What a pipe holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipeData {
    /// Its capacity (`F_GETPIPE_SZ`; None: not recorded, the default).
    pub size: Option<u32>,
    /// The bytes queued in it.
    pub bytes: Vec<u8>,
}

/// How to recreate a pipe end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipePlan {
    /// Shared by both ends of one pipe.
    pub pipe_id: u32,
    /// Open flags (the access mode tells the end).
    pub flags: i32,
    /// Capacity and bytes to put back (the same for every end of the pipe).
    pub data: PipeData,
    /// `--inherit-fd fd[N]:pipe:[ID]`: criu-rs's fd N is this pipe (an end
    /// of it is reopened with the dumped flags, nothing is put back).
    pub inherited: Option<RawFd>,
}

impl PipePlan {
    fn write_end(&self) -> bool {
        self.flags & libc::O_ACCMODE == libc::O_WRONLY
    }
}

/// The pipes made so far: both ends of each, and whether an end was given
/// out already (a second description of it is opened anew).
#[derive(Default)]
pub struct PipeEnds {
    pipes: BTreeMap<u32, [(OwnedFd, bool); 2]>,
}

impl FdKind for Pipe {
    const FD_TYPE: FdTypes = FdTypes::Pipe;
    type Dumped = PipeDumped;
    type Plan = PipePlan;
    type OpenState = PipeEnds;

    fn claims(p: &FdProbe) -> bool {
        p.file_type() == libc::S_IFIFO && p.target.starts_with("pipe:[")
    }

    fn collect(p: &FdProbe, cx: &mut CollectCtx<'_>) -> std::result::Result<PipeDumped, FileDumpError> {
        let ino = p.md.ino();
        let data = if cx.seen.first_sight(FdTypes::Pipe, ino) { Some(peek_pipe(p)?) } else { None };
        check_packet_mode(p)?;
        Ok(PipeDumped { pipe_ino: ino, data })
    }

    fn write(f: &FileDesc, d: &PipeDumped, sink: &mut FilesSink<'_>) -> std::result::Result<(), ImageError> {
        let pipe_id = d.pipe_ino as u32;
        let e = pb::PipeEntry { id: Some(f.id), pipe_id: Some(pipe_id), flags: Some(f.flags), fown: Some(f.fown.entry()) };
        sink.push(pb::FileEntry { r#type: Some(FdTypes::Pipe as i32), id: Some(f.id), pipe: Some(e), ..Default::default() });
        write_queued(sink, ImageKind::PipesData, pipe_id, d.data.as_ref())
    }

    fn load(e: &pb::FileEntry, cx: &LoadCtx<'_>) -> Result<PipePlan> {
        let id = e.id.unwrap_or_default();
        let p = e.pipe.as_ref().ok_or_else(|| cx.bad(format!("file {id:#x} is PIPE without pipe_entry")))?;
        let pipe_id = p.pipe_id.unwrap_or_default();
        let data = cx.side::<PipesData>()?.0.get(&pipe_id).cloned().unwrap_or_default();
        let inherited = cx.opts.inherit_fd(&format!("pipe:[{pipe_id}]"));
        Ok(PipePlan { pipe_id, flags: p.flags.unwrap_or_default() as i32, data, inherited })
    }

    fn open(p: &PipePlan, st: &mut PipeEnds, _cx: &OpenCtx<'_>) -> Result<Opened> {
        use std::collections::btree_map::Entry;
        if let Some(n) = p.inherited {
            // As CRIU: a description of its own on the inherited pipe, the
            // end the dump had.
            let mode = if p.write_end() { OFlags::WRONLY } else { OFlags::RDONLY };
            let fd = rustix::fs::open(format!("/proc/self/fd/{n}"), mode | OFlags::CLOEXEC, Mode::empty())
                .sys(|| format!("reopening inherited fd {n} for pipe:[{}]", p.pipe_id))?;
            set_status_flags(&fd, p.flags)?;
            return Ok(Opened::Fd(fd));
        }
        let ends = match st.pipes.entry(p.pipe_id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(v) => {
                let (r, w) = make_pipe(p.pipe_id, &p.data)?;
                v.insert([(r, false), (w, false)])
            }
        };
        let (end, given) = &mut ends[p.write_end() as usize];
        let fd = if !*given {
            *given = true;
            rustix::io::fcntl_dupfd_cloexec(&*end, 0).sys(|| format!("dup of pipe {:#x}", p.pipe_id))?
        } else {
            // A second description of the same end: open it anew.
            let mode = if p.write_end() { OFlags::WRONLY } else { OFlags::RDONLY };
            rustix::fs::open(format!("/proc/self/fd/{}", end.as_raw_fd()), mode | OFlags::CLOEXEC, Mode::empty())
                .sys(|| format!("reopening pipe {:#x}", p.pipe_id))?
        };
        set_status_flags(&fd, p.flags)?;
        Ok(Opened::Fd(fd))
    }

    fn name(p: &PipePlan) -> String {
        format!("pipe:[{}]", p.pipe_id)
    }
}

/// The capacity of the pipe behind the probed fd and a copy of the bytes
/// queued in it (not consumed).
pub fn peek_pipe(p: &FdProbe) -> std::result::Result<PipeData, FileDumpError> {
    let path = p.proc_path();
    let fail = |step: &'static str| {
        let path = path.display().to_string();
        move |errno: rustix::io::Errno| FileDumpError::PeekPipe { at: p.at(), path, step, errno }
    };
    let src: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| fail("open")(rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO)))?
        .into();
    let queued = rustix::io::ioctl_fionread(&src).map_err(fail("FIONREAD"))?;
    let size = rustix::pipe::fcntl_getpipe_size(&src).map_err(fail("F_GETPIPE_SZ"))?;
    let data = |bytes| PipeData { size: Some(size as u32), bytes };
    if queued == 0 {
        return Ok(data(Vec::new()));
    }
    let (r, w) = rustix::pipe::pipe().map_err(fail("pipe"))?;
    let got = rustix::pipe::fcntl_setpipe_size(&w, size).map_err(fail("F_SETPIPE_SZ"))?;
    if got < size {
        return Err(FileDumpError::PipeCopy { at: p.at(), problem: format!("cannot make a pipe of {size} bytes (got {got})") });
    }
    let n = rustix::pipe::tee(&src, &w, queued as usize, rustix::pipe::SpliceFlags::NONBLOCK).map_err(fail("tee"))?;
    if n != queued as usize {
        return Err(FileDumpError::PipeCopy { at: p.at(), problem: format!("tee copied {n} of {queued} queued bytes") });
    }
    drop(w);
    let mut out = Vec::with_capacity(n);
    let mut buf = vec![0u8; 65536];
    loop {
        let k = rustix::io::read(&r, &mut buf).map_err(fail("read"))?;
        if k == 0 {
            break;
        }
        out.extend_from_slice(&buf[..k]);
    }
    Ok(data(out))
}

/// Refuses a packet-mode (`O_DIRECT`) end of a pipe holding bytes: where
/// one packet ends and the next begins cannot be read from outside.
fn check_packet_mode(p: &FdProbe) -> std::result::Result<(), FileDumpError> {
    if p.info.flags & libc::O_DIRECT as u32 == 0 {
        return Ok(());
    }
    let src = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(p.proc_path());
    let queued = src
        .map_err(|e| rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO))
        .and_then(|f| rustix::io::ioctl_fionread(&f));
    match queued {
        Ok(0) => Ok(()),
        Ok(n) => Err(FileDumpError::UnsupportedState { at: p.at(), what: format!("packet-mode (O_DIRECT) pipe with {n} bytes queued") }),
        Err(errno) => Err(FileDumpError::PeekPipe { at: p.at(), path: p.proc_path().display().to_string(), step: "FIONREAD", errno }),
    }
}

/// One `pipe_data_entry` (capacity, byte count) and the bytes in `kind`
/// (`pipes-data.img`, `fifo-data.img`), on the first end of a pipe.
pub(super) fn write_queued(sink: &mut FilesSink<'_>, kind: ImageKind, pipe_id: u32, data: Option<&PipeData>) -> std::result::Result<(), ImageError> {
    let Some(data) = data else { return Ok(()) };
    let e = pb::PipeDataEntry { pipe_id: Some(pipe_id), bytes: Some(data.bytes.len() as u32), size: data.size };
    sink.side(kind)?.write_entry_with_payload(&e, &data.bytes)
}

/// `pipes-data.img` or `fifo-data.img`: capacity and queued bytes by pipe id.
pub(super) fn read_queued(images: &ImageDir, kind: ImageKind) -> Result<BTreeMap<u32, PipeData>> {
    let mut out = BTreeMap::new();
    if !images.exists(kind, 0) {
        return Ok(out);
    }
    let path = images.image_path(kind, 0);
    let mut r = images.open_image(kind, 0)?;
    while let Some(e) = r.read_entry::<pb::PipeDataEntry>()? {
        let bytes = r.read_raw(e.bytes.unwrap_or_default() as u64)?;
        let pipe_id = e.pipe_id.unwrap_or_default();
        if e.size.is_some_and(|s| (s as usize) < bytes.len()) {
            return Err(RestoreError::bad(&path, format!("pipe {pipe_id:#x}: {} bytes queued in a pipe of {:?}", bytes.len(), e.size)));
        }
        if out.insert(pipe_id, PipeData { size: e.size, bytes }).is_some() {
            return Err(RestoreError::bad(&path, format!("pipe {pipe_id:#x} appears twice")));
        }
    }
    Ok(out)
}

/// `pipes-data.img`.
struct PipesData(BTreeMap<u32, PipeData>);

impl SideImage for PipesData {
    fn read(images: &ImageDir) -> Result<Self> {
        read_queued(images, ImageKind::PipesData).map(PipesData)
    }
}

/// `pipe2(O_CLOEXEC)`, sized and filled as dumped.
fn make_pipe(pipe_id: u32, data: &PipeData) -> Result<(OwnedFd, OwnedFd)> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).sys(|| format!("pipe2 for pipe {pipe_id:#x}"))?;
    fill_pipe(&w, pipe_id, data)?;
    Ok((r, w))
}

/// Gives the pipe behind `w` (a write end, or a FIFO's read-write one) its
/// dumped capacity, checking what the kernel granted, and puts the queued
/// bytes back.
pub(super) fn fill_pipe(w: &OwnedFd, pipe_id: u32, data: &PipeData) -> Result<()> {
    let queued = data.bytes.len();
    let now = rustix::pipe::fcntl_getpipe_size(w).sys(|| format!("F_GETPIPE_SZ for pipe {pipe_id:#x}"))?;
    let want = data.size.map_or(now.max(queued), |s| s as usize);
    if want != now {
        let got = rustix::pipe::fcntl_setpipe_size(w, want).sys(|| format!("F_SETPIPE_SZ({want}) for pipe {pipe_id:#x}"))?;
        if got < queued {
            return Err(RestoreError::PipeTooSmall { pipe_id, got, queued });
        }
        if data.size.is_some() && got != want {
            return Err(RestoreError::Prepare(format!("pipe {pipe_id:#x}: F_SETPIPE_SZ({want}) gave a capacity of {got}")));
        }
    }
    // Non-blocking while filling: a full pipe is an error, not a hang.
    let flags = rustix::fs::fcntl_getfl(w).sys(|| "F_GETFL".into())?;
    rustix::fs::fcntl_setfl(w, flags | OFlags::NONBLOCK).sys(|| "F_SETFL(O_NONBLOCK)".into())?;
    write_all(w, &data.bytes).map_err(|e| RestoreError::sys(format!("refilling pipe {pipe_id:#x}"), e))?;
    rustix::fs::fcntl_setfl(w, flags).sys(|| "F_SETFL".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::roundtrip::{crit_decodes, desc, roundtrip};
    use crate::files::{fdtable, DescPlan, FileKind, LoadOptions};

    #[test]
    fn both_ends_round_trip_and_reopen_with_the_bytes() {
        let data = PipeData { size: Some(1 << 17), bytes: b"queued".to_vec() };
        let r = desc(1, libc::O_RDONLY, FileKind::Pipe(PipeDumped { pipe_ino: 77, data: Some(data.clone()) }));
        let w = desc(2, libc::O_WRONLY | libc::O_NONBLOCK, FileKind::Pipe(PipeDumped { pipe_ino: 77, data: None }));
        let (plans, tmp) = roundtrip(&[r, w], &LoadOptions::default());
        let plans = plans.unwrap();
        let want = |flags| DescPlan::Pipe(PipePlan { pipe_id: 77, flags, data: data.clone(), inherited: None });
        assert_eq!(plans[&1], want(libc::O_RDONLY));
        assert_eq!(plans[&2], want(libc::O_WRONLY | libc::O_NONBLOCK));
        crit_decodes(&tmp.path().join("pipes-data.img"));
        let (opened, _) = fdtable::open_descs(&plans, 100).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(rustix::io::write(&opened[&2], b"+").unwrap(), 1);
        let n = rustix::io::read(&opened[&1], &mut buf).unwrap();
        assert_eq!(&buf[..n], b"queued+");
        assert!(opened.values().all(|fd| fd.as_raw_fd() >= 100));
        assert_eq!(rustix::pipe::fcntl_getpipe_size(&opened[&1]).unwrap(), 1 << 17);
    }
}
