//! `seccomp.img`: the seccomp filters of every thread of the dump, in one
//! `seccomp_entry`, laid out as CRIU does.
//!
//! Each thread's chain is written newest filter first; every filter but
//! the newest names, in `prev`, the one written just before it (the next
//! newer), and the thread's `thread_core.seccomp_filter` names its oldest.
//! Following `prev` from there gives the filters in the order they were
//! installed.
//!
//! When every thread of a process has the same chain (installed with
//! `SECCOMP_FILTER_FLAG_TSYNC`, most likely: the kernel cannot tell us),
//! only the leader's is written, flagged TSYNC, and the other threads are
//! written without seccomp: restoring it so makes the threads share the
//! filters again, so that the program can still add a TSYNC filter later.
//! (As CRIU, also for a single thread.)

use crate::dump::model::{ProcessDump, SECCOMP_FILTER_FLAG_TSYNC, SECCOMP_MODE_FILTER};
use crate::images::pb;
use std::collections::BTreeMap;

/// What `thread_core` says about a thread's seccomp state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadSeccomp {
    /// `seccomp_mode`.
    pub mode: u32,
    /// `seccomp_filter`: index of its oldest filter in the image.
    pub filter: Option<u32>,
}

/// The image entry and each thread's `thread_core` fields (by tid).
#[derive(Debug, Clone, Default)]
pub struct SeccompImage {
    pub entry: pb::SeccompEntry,
    pub threads: BTreeMap<i32, ThreadSeccomp>,
}

/// Whether every thread of `p` has the leader's filter chain.
fn shared_chain(p: &ProcessDump) -> bool {
    let leader = &p.threads[0].seccomp;
    leader.mode == SECCOMP_MODE_FILTER && p.threads.iter().all(|t| t.seccomp == *leader)
}

/// Lays out every thread's filters of `procs`.
pub fn seccomp_image(procs: &[ProcessDump]) -> SeccompImage {
    let mut img = SeccompImage::default();
    for p in procs {
        let shared = shared_chain(p);
        for (i, t) in p.threads.iter().enumerate() {
            if shared && i > 0 {
                img.threads.insert(t.tid, ThreadSeccomp::default());
                continue;
            }
            let mut filter = None;
            for (n, f) in t.seccomp.filters.iter().rev().enumerate() {
                let pos = img.entry.seccomp_filters.len() as u32;
                img.entry.seccomp_filters.push(pb::SeccompFilter {
                    filter: Some(f.prog.clone()),
                    prev: (n > 0).then(|| pos - 1),
                    flags: Some(f.flags | if shared { SECCOMP_FILTER_FLAG_TSYNC } else { 0 }),
                });
                filter = Some(pos);
            }
            img.threads.insert(t.tid, ThreadSeccomp { mode: t.seccomp.mode, filter });
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dump::model::{Seccomp, SeccompFilter};

    fn chain(progs: &[u8]) -> Seccomp {
        Seccomp { mode: SECCOMP_MODE_FILTER, filters: progs.iter().map(|&b| SeccompFilter { flags: 0, prog: vec![b; 8] }).collect() }
    }

    /// Follows a thread's chain from its oldest filter, as restore does.
    fn installed(img: &SeccompImage, tid: i32) -> Vec<(u8, u32)> {
        let mut out = Vec::new();
        let mut at = img.threads[&tid].filter;
        while let Some(i) = at {
            let f = &img.entry.seccomp_filters[i as usize];
            out.push((f.filter.as_ref().unwrap()[0], f.flags.unwrap()));
            at = f.prev;
        }
        out
    }

    #[test]
    fn chains_come_back_in_install_order() {
        let mut a = crate::dump::model::tests::process(10, &[10, 11]);
        a.threads[0].seccomp = chain(&[1, 2, 3]);
        a.threads[1].seccomp = chain(&[1, 2]);
        let mut b = crate::dump::model::tests::process(20, &[20]);
        b.threads[0].seccomp = Seccomp { mode: 1, filters: vec![] };
        let mut c = crate::dump::model::tests::process(30, &[30]);
        c.threads[0].seccomp = chain(&[6]);
        let img = seccomp_image(&[a, b, c]);
        assert_eq!(img.entry.seccomp_filters.len(), 6);
        assert_eq!(installed(&img, 10), vec![(1, 0), (2, 0), (3, 0)]);
        assert_eq!(installed(&img, 11), vec![(1, 0), (2, 0)]);
        assert_eq!(img.threads[&20], ThreadSeccomp { mode: 1, filter: None });
        assert_eq!(installed(&img, 30), vec![(6, SECCOMP_FILTER_FLAG_TSYNC)], "a lone thread's chain too");
    }

    #[test]
    fn a_chain_every_thread_shares_is_the_leaders_with_tsync() {
        let mut a = crate::dump::model::tests::process(10, &[10, 11, 12]);
        for t in &mut a.threads {
            t.seccomp = chain(&[4, 5]);
        }
        let img = seccomp_image(&[a]);
        assert_eq!(installed(&img, 10), vec![(4, 1), (5, 1)]);
        assert_eq!(img.threads[&11], ThreadSeccomp::default());
        assert_eq!(img.threads[&12], ThreadSeccomp::default());
    }
}
