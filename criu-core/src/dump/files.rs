//! Open files of a process: every descriptor, the open file description it
//! refers to (shared descriptions detected with `kcmp(KCMP_FILE)`), the
//! contents of unlinked files and the bytes queued in pipes (copied with
//! `tee(2)`, so the pipe keeps them).

use super::model::{FdEntry, FileDesc, FileKind, FilesState, Ghost};
use super::shared::{SeenFile, SeenFiles};
use super::DumpError;
use crate::proc::fds::{read_fdinfo, read_fds};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

/// Largest unlinked file whose contents we keep.
pub const GHOST_LIMIT: u64 = 64 << 20;

/// `kcmp(pid, pid, KCMP_FILE, fd1, fd2)`: whether two descriptors of `pid`
/// refer to the same open file description.
pub fn kcmp_same_file(pid: i32, fd1: i32, fd2: i32) -> Result<bool, nix::errno::Errno> {
    super::shared::kcmp(pid, pid, super::shared::kcmp_type::FILE, fd1 as u64, fd2 as u64)
}

/// Copies the bytes queued in the pipe behind `/proc/PID/fd/FD` without
/// consuming them.
pub fn peek_pipe(pid: i32, fd: i32) -> Result<Vec<u8>, DumpError> {
    let path = crate::proc::path(pid, &format!("fd/{fd}"));
    let io = |e: std::io::Error| DumpError::File { fd, what: format!("pipe {}: {e}", path.display()) };
    let errno = |e: rustix::io::Errno| DumpError::File { fd, what: format!("pipe {}: {e}", path.display()) };
    let src: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .map_err(io)?
        .into();
    let queued = rustix::io::ioctl_fionread(&src).map_err(errno)?;
    if queued == 0 {
        return Ok(Vec::new());
    }
    let size = rustix::pipe::fcntl_getpipe_size(&src).map_err(errno)?;
    let (r, w) = rustix::pipe::pipe().map_err(errno)?;
    let got = rustix::pipe::fcntl_setpipe_size(&w, size).map_err(errno)?;
    if got < size {
        return Err(DumpError::File { fd, what: format!("cannot make a pipe of {size} bytes (got {got})") });
    }
    let n = rustix::pipe::tee(&src, &w, queued as usize, rustix::pipe::SpliceFlags::NONBLOCK).map_err(errno)?;
    if n != queued as usize {
        return Err(DumpError::File { fd, what: format!("tee copied {n} of {queued} queued bytes") });
    }
    drop(w);
    let mut out = Vec::with_capacity(n);
    let mut buf = vec![0u8; 65536];
    loop {
        let k = rustix::io::read(&r, &mut buf).map_err(errno)?;
        if k == 0 {
            break;
        }
        out.extend_from_slice(&buf[..k]);
    }
    Ok(out)
}


/// Saves an unlinked file through its `/proc/PID/NAME` link (`fd/N`,
/// `exe`, `map_files/START-END`); `fd` is for error messages (-1 if none).
fn read_ghost(pid: i32, name: &str, fd: i32, md: &std::fs::Metadata) -> Result<Ghost, DumpError> {
    if md.len() > GHOST_LIMIT {
        return Err(DumpError::File { fd, what: format!("unlinked file of {} bytes is over the {GHOST_LIMIT} limit", md.len()) });
    }
    let path = crate::proc::path(pid, name);
    let data = std::fs::read(&path).map_err(|e| DumpError::File { fd, what: format!("reading unlinked file: {e}") })?;
    Ok(Ghost {
        uid: md.uid(),
        gid: md.gid(),
        mode: md.mode(),
        mtime: (md.mtime(), md.mtime_nsec()),
        atime: (md.atime(), md.atime_nsec()),
        data,
    })
}

/// Strips the ` (deleted)` suffix the kernel adds to unlinked paths.
fn strip_deleted(p: &str) -> (&str, bool) {
    match p.strip_suffix(" (deleted)") {
        Some(s) => (s, true),
        None => (p, false),
    }
}

/// Whether a character device number is a terminal: the tty and pts
/// majors, `/dev/tty`, `/dev/console`, `/dev/ptmx`.
pub fn is_tty(rdev: u64) -> bool {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    major == 4 || (136..=143).contains(&major) || (major == 5 && minor <= 2)
}

/// Collects the descriptors of `pid`. File ids start at `next_id`, which is
/// advanced; descriptions already known (same `kcmp`, in this task or one
/// collected before, as `seen` records) reuse their id, and a pipe's queued
/// bytes are saved on its first end only.
/// Terminals are refused unless `shell_job` (they are then recorded by path,
/// to be replaced by the restoring shell's terminal).
pub fn collect_fds(pid: i32, next_id: &mut u32, seen: &mut SeenFiles, shell_job: bool) -> Result<FilesState, DumpError> {
    let mut st = FilesState::default();
    for link in read_fds(pid)? {
        let fd = link.fd;
        let info = read_fdinfo(pid, fd)?;
        let cloexec = info.flags & libc::O_CLOEXEC as u32 != 0;
        let md = std::fs::metadata(crate::proc::path(pid, &format!("fd/{fd}")))
            .map_err(|e| DumpError::File { fd, what: format!("stat: {e}") })?;
        let (dev, ino) = (md.dev(), md.ino());
        let shared_with = seen.find(pid, fd, dev, ino).map_err(|e| DumpError::File { fd, what: format!("kcmp: {e}") })?;
        if let Some(id) = shared_with {
            st.fds.push(FdEntry { fd, file_id: id, cloexec });
            continue;
        }
        let id = *next_id;
        *next_id += 1;
        seen.files.push(SeenFile { pid, fd, dev, ino, id });
        let target = link.target.to_string_lossy().into_owned();
        let ft = md.mode() & libc::S_IFMT;
        let kind = match ft {
            libc::S_IFIFO => {
                let data = if seen.first_sight_of_pipe(ino) { Some(peek_pipe(pid, fd)?) } else { None };
                if target.starts_with("pipe:[") {
                    FileKind::Pipe { pipe_ino: ino, data }
                } else {
                    let regf_id = *next_id;
                    *next_id += 1;
                    FileKind::Fifo { path: strip_deleted(&target).0.to_owned(), pipe_ino: ino, data, mode: md.mode(), regf_id }
                }
            }
            libc::S_IFCHR if is_tty(md.rdev()) && !shell_job => {
                return Err(DumpError::File { fd, what: format!("{target} is a terminal; pass --shell-job (-j)") })
            }
            libc::S_IFREG | libc::S_IFDIR | libc::S_IFCHR | libc::S_IFBLK if target.starts_with('/') => {
                let (path, deleted) = strip_deleted(&target);
                let ghost = if deleted && md.nlink() == 0 && ft == libc::S_IFREG {
                    Some(read_ghost(pid, &format!("fd/{fd}"), fd, &md)?)
                } else {
                    None
                };
                FileKind::Reg {
                    path: path.to_owned(),
                    mnt_id: info.mnt_id,
                    size: md.len(),
                    mode: md.mode(),
                    dev_ino: (dev, ino),
                    rdev: md.rdev(),
                    ghost,
                }
            }
            _ => return Err(DumpError::File { fd, what: format!("unsupported file {target:?}") }),
        };
        st.files.push(FileDesc { id, flags: info.flags & !(libc::O_CLOEXEC as u32), pos: info.pos, kind });
        st.fds.push(FdEntry { fd, file_id: id, cloexec });
    }
    Ok(st)
}

/// Describes the file behind a `/proc/PID/NAME` link (`cwd`, `root`, `exe`,
/// `map_files/START-END`) as an open file description with `flags`.
pub fn path_file(pid: i32, name: &str, id: u32, flags: u32) -> Result<FileDesc, DumpError> {
    let target = crate::proc::misc::read_link(pid, name)?;
    let md = std::fs::metadata(crate::proc::path(pid, name)).map_err(|e| DumpError::File { fd: -1, what: format!("{name}: {e}") })?;
    let target = target.to_string_lossy().into_owned();
    let (path, deleted) = strip_deleted(&target);
    if deleted && md.is_dir() {
        return Err(DumpError::File { fd: -1, what: format!("{name} {path:?} was removed") });
    }
    // An unlinked executable or mapped file (or a memfd) travels as a ghost.
    let ghost = if deleted && md.is_file() && md.nlink() == 0 { Some(read_ghost(pid, name, -1, &md)?) } else { None };
    Ok(FileDesc {
        id,
        flags,
        pos: 0,
        kind: FileKind::Reg {
            path: path.to_owned(),
            mnt_id: -1,
            size: md.len(),
            mode: md.mode(),
            dev_ino: (md.dev(), md.ino()),
            rdev: md.rdev(),
            ghost,
        },
    })
}

/// Open flags CRIU records for directories (cwd, root).
pub const DIR_FLAGS: u32 = (libc::O_RDONLY | libc::O_DIRECTORY) as u32;
