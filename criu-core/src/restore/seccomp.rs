//! Seccomp of the restored threads: each thread's mode (`thread_core
//! .seccomp_mode`) and, in filter mode, its chain of filters from
//! `seccomp.img` (see `dump::write::seccomp` for the layout), checked
//! here and installed by the thread itself at the end of the blob.
//!
//! The blob installs them after everything else it does in the thread but
//! the last capability drop (installing a filter without `no_new_privs`
//! needs CAP_SYS_ADMIN, which the dumped thread may have dropped since),
//! then the registers are set back. criu-rs traces every task with
//! `PTRACE_O_SUSPEND_SECCOMP` meanwhile (see [`super::barrier`]), so what
//! is left of the blob and criu-rs's own clean-up calls in the task run
//! whatever the filters forbid; they apply from the moment criu-rs lets
//! the task go.

use super::error::{RestoreError, Result};
use crate::images::pb;
use std::path::Path;

/// `SECCOMP_MODE_STRICT`.
pub const MODE_STRICT: u32 = 1;
/// `SECCOMP_MODE_FILTER`.
pub const MODE_FILTER: u32 = 2;
/// Filter flags a restored filter may carry: TSYNC, LOG, SPEC_ALLOW,
/// TSYNC_ESRCH, WAIT_KILLABLE_RECV (NEW_LISTENER, 8, would hand out a
/// notification fd no one holds).
const FLAGS_KNOWN: u32 = 1 | 2 | 4 | 16 | 32;
/// Size of one `struct sock_filter`.
const INSN: usize = 8;
/// `BPF_MAXINSNS`.
const MAX_INSNS: usize = 4096;

/// One filter to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// `SECCOMP_FILTER_FLAG_*`.
    pub flags: u32,
    /// The classic BPF program.
    pub prog: Vec<u8>,
}

/// A thread's seccomp state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadSeccomp {
    /// 0, [`MODE_STRICT`] or [`MODE_FILTER`].
    pub mode: u32,
    /// With [`MODE_FILTER`], the filters in install order (oldest first).
    pub filters: Vec<Filter>,
}

/// Reads `seccomp.img` if some thread needs it (`None` when no thread is
/// in filter mode; a missing image is an error then).
pub fn read_image(images: &crate::images::ImageDir, cores: &[&pb::CoreEntry]) -> Result<Option<pb::SeccompEntry>> {
    let wanted = cores.iter().any(|c| c.thread_core.as_ref().and_then(|t| t.seccomp_mode) == Some(MODE_FILTER as i32));
    if !wanted {
        return Ok(None);
    }
    Ok(Some(images.read_one(crate::images::ImageKind::Seccomp, 0)?))
}

/// Thread `tid`'s seccomp state from its `thread_core` (in `file`) and the
/// image: every index in range, no loop, programs of whole instructions
/// the kernel would accept, known flags.
pub fn thread_seccomp(file: &Path, tid: i32, tc: &pb::ThreadCoreEntry, image: Option<&pb::SeccompEntry>) -> Result<ThreadSeccomp> {
    let bad = |what: String| RestoreError::bad(file, format!("thread {tid}: seccomp: {what}"));
    let mode = tc.seccomp_mode.unwrap_or(0);
    match mode {
        0 => return Ok(ThreadSeccomp::default()),
        1 => return Ok(ThreadSeccomp { mode: MODE_STRICT, filters: Vec::new() }),
        2 => {}
        m => return Err(bad(format!("unknown mode {m}"))),
    }
    let list = image.map_or(&[][..], |e| &e.seccomp_filters[..]);
    let mut at = tc.seccomp_filter.ok_or_else(|| bad("filter mode without a filter index".into()))?;
    let mut filters = Vec::new();
    loop {
        let f = list.get(at as usize).ok_or_else(|| bad(format!("filter index {at} outside seccomp.img ({} filters)", list.len())))?;
        let prog = f.filter.clone().unwrap_or_default();
        if prog.is_empty() || prog.len() % INSN != 0 || prog.len() > MAX_INSNS * INSN {
            return Err(bad(format!("filter {at}: a program of {} bytes", prog.len())));
        }
        let flags = f.flags.unwrap_or(0);
        if flags & !FLAGS_KNOWN != 0 {
            return Err(RestoreError::Unsupported { file: file.into(), what: format!("thread {tid}: seccomp filter flags {flags:#x}") });
        }
        filters.push(Filter { flags, prog });
        match f.prev {
            // Out of range: said at the top of the loop.
            Some(next) if filters.len() < list.len() || next as usize >= list.len() => at = next,
            Some(_) => return Err(bad("the filter chain loops".into())),
            None => break,
        }
    }
    Ok(ThreadSeccomp { mode: MODE_FILTER, filters })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(b: u8, prev: Option<u32>, flags: u32) -> pb::SeccompFilter {
        pb::SeccompFilter { filter: Some(vec![b; 16]), prev, flags: Some(flags) }
    }

    fn tc(mode: i32, at: Option<u32>) -> pb::ThreadCoreEntry {
        pb::ThreadCoreEntry { seccomp_mode: Some(mode), seccomp_filter: at, ..Default::default() }
    }

    #[test]
    fn chains_follow_prev_from_the_oldest() {
        // As CRIU writes them: newest first, each older one's prev naming the next newer.
        let img = pb::SeccompEntry { seccomp_filters: vec![filter(3, None, 0), filter(2, Some(0), 0), filter(1, Some(1), 2)] };
        let f = Path::new("core-5.img");
        let t = thread_seccomp(f, 5, &tc(2, Some(2)), Some(&img)).unwrap();
        assert_eq!(t.mode, MODE_FILTER);
        assert_eq!(t.filters.iter().map(|x| (x.prog[0], x.flags)).collect::<Vec<_>>(), vec![(1, 2), (2, 0), (3, 0)]);
        assert_eq!(thread_seccomp(f, 5, &tc(1, None), None).unwrap(), ThreadSeccomp { mode: MODE_STRICT, filters: vec![] });
        assert_eq!(thread_seccomp(f, 5, &pb::ThreadCoreEntry::default(), None).unwrap(), ThreadSeccomp::default());
    }

    #[test]
    fn broken_chains_are_refused() {
        let f = Path::new("core-5.img");
        let looping = pb::SeccompEntry { seccomp_filters: vec![filter(1, Some(1), 0), filter(2, Some(0), 0)] };
        assert!(thread_seccomp(f, 5, &tc(2, Some(0)), Some(&looping)).unwrap_err().to_string().contains("loops"));
        let short = pb::SeccompEntry { seccomp_filters: vec![filter(1, Some(7), 0)] };
        assert!(thread_seccomp(f, 5, &tc(2, Some(0)), Some(&short)).unwrap_err().to_string().contains("outside"));
        assert!(thread_seccomp(f, 5, &tc(2, None), Some(&short)).is_err());
        assert!(thread_seccomp(f, 5, &tc(2, Some(0)), None).is_err());
        let odd = pb::SeccompEntry { seccomp_filters: vec![pb::SeccompFilter { filter: Some(vec![0; 9]), prev: None, flags: None }] };
        assert!(thread_seccomp(f, 5, &tc(2, Some(0)), Some(&odd)).unwrap_err().to_string().contains("9 bytes"));
        let listener = pb::SeccompEntry { seccomp_filters: vec![filter(1, None, 8)] };
        assert!(thread_seccomp(f, 5, &tc(2, Some(0)), Some(&listener)).unwrap_err().to_string().contains("unsupported"));
        assert!(thread_seccomp(f, 5, &tc(3, None), None).is_err());
    }
}
