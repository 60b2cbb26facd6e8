//! The dump side's kind-free loop: every fd of a task probed, shared
//! descriptions found, each new description collected by its kind.

use super::seen::SeenFile;
use super::{CollectCtx, FdEntry, FdProbe, FileDesc, FileDumpError, FileKind, FilesOptions, FilesState, Fown, SeenFiles};
use crate::proc::fds::read_fds;
use std::os::unix::fs::MetadataExt;

/// Collects the descriptors of `pid`. File ids start at `next_id`, which is
/// advanced; descriptions already known (same `kcmp`, in this task or one
/// collected before, as `seen` records) reuse their id.
pub fn collect_fds(pid: i32, next_id: &mut u32, seen: &mut SeenFiles, opts: FilesOptions) -> Result<FilesState, FileDumpError> {
    let mut st = FilesState::default();
    for link in read_fds(pid)? {
        let p = FdProbe::read(pid, &link)?;
        let (dev, ino) = (p.md.dev(), p.md.ino());
        let shared_with = seen.find(pid, p.fd, dev, ino).map_err(|errno| FileDumpError::Kcmp { at: p.at(), errno })?;
        if let Some(id) = shared_with {
            st.fds.push(FdEntry { fd: p.fd, file_id: id, cloexec: p.cloexec() });
            continue;
        }
        let mut cx = CollectCtx::new(pid, opts, seen, next_id);
        let id = cx.alloc_id();
        cx.seen.files.push(SeenFile { pid, fd: p.fd, dev, ino, id });
        let kind = FileKind::collect(&p, &mut cx)?;
        tracing::debug!(pid, fd = p.fd, id, kind = ?kind.fd_type(), target = %p.target, "collected fd");
        st.files.push(FileDesc { id, flags: p.flags(), pos: p.info.pos, fown: Fown::default(), kind });
        st.fds.push(FdEntry { fd: p.fd, file_id: id, cloexec: p.cloexec() });
    }
    Ok(st)
}
