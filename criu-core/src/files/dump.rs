//! The dump side's kind-free loop: every fd of a task probed, shared
//! descriptions found, each new description collected by its kind.

use super::seen::{FileKey, SeenFile};
use super::{CollectCtx, DumpSockets, FdEntry, FdProbe, FileDesc, FileDumpError, FileKind, FilesOptions, FilesState, Fown, SeenFiles};
use crate::proc::fds::FdDirs;
use std::os::unix::fs::MetadataExt;

/// Collects the descriptors of `pid`. File ids start at `next_id`, which is
/// advanced; descriptions already known (same `kcmp`, in this task or one
/// collected before, as `seen` records) reuse their id.
pub fn collect_fds(pid: i32, next_id: &mut u32, seen: &mut SeenFiles, sockets: &mut DumpSockets, opts: FilesOptions) -> Result<FilesState, FileDumpError> {
    let mut st = FilesState::default();
    let dirs = FdDirs::open(pid)?;
    for link in dirs.links()? {
        let p = FdProbe::read_in(&dirs, &link)?;
        let key = FileKey { dev: p.md.dev(), ino: p.md.ino(), share: FileKind::share_key(&p) };
        let slot = match seen.find(pid, p.fd, key).map_err(|errno| FileDumpError::Kcmp { at: p.at(), errno })? {
            Ok(id) => {
                st.fds.push(FdEntry { fd: p.fd, file_id: id, cloexec: p.cloexec() });
                continue;
            }
            Err(slot) => slot,
        };
        let mut cx = CollectCtx::new(pid, opts, seen, sockets, next_id);
        let id = cx.alloc_id();
        cx.seen.insert(slot, SeenFile { pid, fd: p.fd, id });
        let kind = FileKind::collect(&p, &mut cx)?;
        tracing::debug!(pid, fd = p.fd, id, kind = ?kind.fd_type(), target = %p.target, "collected fd");
        st.files.push(FileDesc { id, flags: p.flags(), pos: p.info.pos, fown: Fown::default(), kind });
        st.fds.push(FdEntry { fd: p.fd, file_id: id, cloexec: p.cloexec() });
    }
    Ok(st)
}
