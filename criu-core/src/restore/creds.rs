//! Credentials of the restored threads: read from each thread's
//! `creds_entry` (in `core-TID.img`'s `thread_core`), checked, and checked
//! again against what this criu-rs can grant, for the whole tree, before
//! any task is created.
//!
//! The blob applies them in each thread (`restore::task::set_creds` in the
//! restorer): groups, then ids with `SECBIT_NO_SETUID_FIXUP` so no
//! capability is lost on the way, then inheritable and ambient sets, the
//! bounding set, securebits and last the effective and permitted sets. That
//! needs, in criu-rs (whose credentials the forked tasks start with):
//! CAP_SETGID / CAP_SETUID for ids other than its own, CAP_SETPCAP for
//! securebits and bounding drops, every dumped permitted capability in its
//! own permitted set, and every id mapped in its user namespace. Anything
//! short of that is refused here, naming the thread and what is missing,
//! so that nothing half-restored ever runs.

use super::error::{RestoreError, Result};
use crate::images::pb;
use std::path::Path;

/// `CAP_SETGID`.
const CAP_SETGID: u32 = 6;
/// `CAP_SETUID`.
const CAP_SETUID: u32 = 7;
/// `CAP_SETPCAP`.
const CAP_SETPCAP: u32 = 8;
/// Securebits the kernel knows (`SECURE_ALL_BITS | SECURE_ALL_LOCKS`,
/// including the exec bits of 6.14).
const SECBITS_KNOWN: u32 = 0xfff;
/// `NGROUPS_MAX`.
const NGROUPS_MAX: usize = 65536;

/// One thread's credentials, as dumped (the five capability sets as 64-bit
/// values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Creds {
    /// Real, effective, saved and fs uid.
    pub uids: [u32; 4],
    /// Real, effective, saved and fs gid.
    pub gids: [u32; 4],
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Inheritable set.
    pub inh: u64,
    /// Permitted set.
    pub prm: u64,
    /// Effective set.
    pub eff: u64,
    /// Bounding set.
    pub bnd: u64,
    /// Ambient set.
    pub amb: u64,
    /// `PR_SET_SECUREBITS` value.
    pub secbits: u32,
    /// `PR_SET_NO_NEW_PRIVS`.
    pub no_new_privs: bool,
}

/// A capability set from its 32-bit words (CRIU writes two; more than two
/// would name capabilities no kernel has).
fn cap_set(words: &[u32], what: &str) -> std::result::Result<u64, String> {
    match words {
        [] => Ok(0),
        [lo] => Ok(*lo as u64),
        [lo, hi] => Ok(*lo as u64 | (*hi as u64) << 32),
        _ => Err(format!("{what} has {} words (at most 2)", words.len())),
    }
}

impl Creds {
    /// Reads and checks a `creds_entry` of thread `tid` (in `file`): the
    /// required ids present, the capability sets consistent as the kernel
    /// keeps them (effective and ambient within permitted, ambient within
    /// inheritable), known securebits only.
    pub fn from_entry(file: &Path, tid: i32, c: &pb::CredsEntry) -> Result<Creds> {
        let bad = |what: String| RestoreError::bad(file, format!("thread {tid}: credentials: {what}"));
        let id = |v: Option<u32>, name: &str| v.ok_or_else(|| bad(format!("no {name}")));
        let set = |w: &[u32], name: &str| cap_set(w, name).map_err(bad);
        let creds = Creds {
            uids: [id(c.uid, "uid")?, id(c.euid, "euid")?, id(c.suid, "suid")?, id(c.fsuid, "fsuid")?],
            gids: [id(c.gid, "gid")?, id(c.egid, "egid")?, id(c.sgid, "sgid")?, id(c.fsgid, "fsgid")?],
            groups: c.groups.clone(),
            inh: set(&c.cap_inh, "cap_inh")?,
            prm: set(&c.cap_prm, "cap_prm")?,
            eff: set(&c.cap_eff, "cap_eff")?,
            bnd: set(&c.cap_bnd, "cap_bnd")?,
            amb: set(&c.cap_amb, "cap_amb")?,
            secbits: id(c.secbits, "secbits")?,
            no_new_privs: c.no_new_privs.unwrap_or(0) != 0,
        };
        if creds.eff & !creds.prm != 0 {
            return Err(bad(format!("effective set {:#x} outside the permitted set {:#x}", creds.eff, creds.prm)));
        }
        if creds.amb & !(creds.prm & creds.inh) != 0 {
            return Err(bad(format!("ambient set {:#x} outside permitted and inheritable", creds.amb)));
        }
        if creds.secbits & !SECBITS_KNOWN != 0 {
            return Err(bad(format!("unknown securebits {:#x}", creds.secbits)));
        }
        if creds.groups.len() > NGROUPS_MAX {
            return Err(bad(format!("{} supplementary groups (at most {NGROUPS_MAX})", creds.groups.len())));
        }
        if let Some(bad_id) = creds.uids.iter().chain(&creds.gids).chain(&creds.groups).find(|&&i| i == u32::MAX) {
            return Err(bad(format!("invalid id {bad_id}")));
        }
        Ok(creds)
    }

    /// The blob's form of these credentials (`groups`: where the list was
    /// put in the argument block).
    pub fn to_arg(&self, groups: crate::abi::ArgArray) -> crate::abi::CredsArg {
        let words = |v: u64| [v as u32, (v >> 32) as u32];
        crate::abi::CredsArg {
            uid: self.uids[0],
            euid: self.uids[1],
            suid: self.uids[2],
            fsuid: self.uids[3],
            gid: self.gids[0],
            egid: self.gids[1],
            sgid: self.gids[2],
            fsgid: self.gids[3],
            groups,
            cap_inh: words(self.inh),
            cap_prm: words(self.prm),
            cap_eff: words(self.eff),
            cap_bnd: words(self.bnd),
            cap_amb: words(self.amb),
            secbits: self.secbits,
            no_new_privs: self.no_new_privs as u32,
        }
    }
}

/// One line of a `uid_map`/`gid_map`: ids `inside .. inside + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IdRange {
    inside: u64,
    count: u64,
}

/// Parses `/proc/self/uid_map` text.
fn parse_id_map(text: &str) -> Vec<IdRange> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace().map(|x| x.parse::<u64>().ok());
            let (inside, _outside, count) = (w.next()??, w.next()??, w.next()??);
            Some(IdRange { inside, count })
        })
        .collect()
}

/// What this criu-rs can grant: its own credentials and user namespace.
#[derive(Debug, Clone)]
pub struct Grantor {
    uids: [u32; 4],
    gids: [u32; 4],
    groups: Vec<u32>,
    inh: u64,
    prm: u64,
    eff: u64,
    bnd: u64,
    secbits_settable: bool,
    uid_map: Vec<IdRange>,
    gid_map: Vec<IdRange>,
    /// Capabilities the kernel has (`cap_last_cap`).
    valid: u64,
}

impl Grantor {
    /// Reads criu-rs's own credentials from `/proc/self`.
    pub fn ours() -> Result<Grantor> {
        let read = |name: &str| {
            let path = Path::new("/proc/self").join(name);
            std::fs::read_to_string(&path).map_err(|source| RestoreError::ImageIo { file: path, source })
        };
        let st = crate::proc::status::parse_status(&read("status")?, Path::new("/proc/self/status"))
            .map_err(|e| RestoreError::Prepare(format!("reading criu-rs's own credentials: {e}")))?;
        let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(63)
            .min(63);
        let valid = if last == 63 { u64::MAX } else { (1u64 << (last + 1)) - 1 };
        Ok(Grantor {
            uids: st.uid,
            gids: st.gid,
            groups: st.groups,
            inh: st.cap_inh,
            prm: st.cap_prm,
            eff: st.cap_eff,
            bnd: st.cap_bnd,
            secbits_settable: st.cap_eff & (1 << CAP_SETPCAP) != 0,
            uid_map: parse_id_map(&read("uid_map")?),
            gid_map: parse_id_map(&read("gid_map")?),
            valid,
        })
    }

    fn has(&self, cap: u32) -> bool {
        self.eff & (1 << cap) != 0
    }

    /// Why thread `tid` of task `pid` cannot get `c` from us, if it cannot.
    pub fn refusal(&self, c: &Creds) -> Option<String> {
        let mapped = |map: &[IdRange], id: u32| map.iter().any(|r| (r.inside..r.inside + r.count).contains(&(id as u64)));
        if let Some(id) = c.uids.iter().find(|&&u| !mapped(&self.uid_map, u)) {
            return Some(format!("uid {id} is not mapped in criu-rs's user namespace"));
        }
        if let Some(id) = c.gids.iter().chain(&c.groups).find(|&&g| !mapped(&self.gid_map, g)) {
            return Some(format!("gid {id} is not mapped in criu-rs's user namespace"));
        }
        if c.uids != self.uids && !self.has(CAP_SETUID) {
            return Some(format!("uids {:?} differ from criu-rs's {:?} and criu-rs lacks CAP_SETUID", c.uids, self.uids));
        }
        if (c.gids != self.gids || c.groups != self.groups) && !self.has(CAP_SETGID) {
            return Some(format!("gids {:?} / groups differ from criu-rs's and criu-rs lacks CAP_SETGID", c.gids));
        }
        let (prm, inh, bnd, amb) = (c.prm & self.valid, c.inh & self.valid, c.bnd & self.valid, c.amb & self.valid);
        if prm & !self.prm != 0 {
            return Some(format!("permitted capabilities {:#x} beyond criu-rs's own ({:#x})", prm & !self.prm, self.prm));
        }
        if bnd & !self.bnd != 0 {
            return Some(format!("bounding set {:#x} beyond criu-rs's own ({:#x})", bnd & !self.bnd, self.bnd));
        }
        // Raising an inheritable capability: within our bounding set, and
        // within our permitted set unless we hold CAP_SETPCAP.
        let inh_new = inh & !self.inh;
        if inh_new & !self.bnd != 0 || (!self.has(CAP_SETPCAP) && inh_new & !self.prm != 0) {
            return Some(format!("inheritable capabilities {inh_new:#x} criu-rs cannot grant"));
        }
        if amb & !prm != 0 {
            return Some(format!("ambient capabilities {amb:#x} outside the permitted set"));
        }
        let ids_change = c.uids != self.uids || c.gids != self.gids;
        if !self.secbits_settable && (bnd != self.bnd & self.valid || ids_change || c.secbits != 0) {
            return Some("securebits, bounding set or ids to set, and criu-rs lacks CAP_SETPCAP".into());
        }
        None
    }
}

/// Checks that criu-rs can grant every thread's credentials in `tasks`
/// (pid, per thread (tid, creds)).
pub fn check_grantable<'a>(tasks: impl IntoIterator<Item = (i32, &'a [(i32, Creds)])>) -> Result<()> {
    let us = Grantor::ours()?;
    for (pid, threads) in tasks {
        for (tid, c) in threads {
            if let Some(why) = us.refusal(c) {
                return Err(RestoreError::CannotGrant { pid, tid: *tid, what: why });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> Grantor {
        Grantor {
            uids: [0; 4],
            gids: [0; 4],
            groups: vec![],
            inh: 0,
            prm: 0x1ff_feff_ffff,
            eff: 0x1ff_feff_ffff,
            bnd: 0x1ff_feff_ffff,
            secbits_settable: true,
            uid_map: parse_id_map("         0          0 4294967295\n"),
            gid_map: parse_id_map("         0          0 4294967295\n"),
            valid: 0x1ff_ffff_ffff,
        }
    }

    fn nobody() -> Creds {
        Creds { uids: [65534; 4], gids: [65534; 4], bnd: 0x1ff_feff_ffff, ..Default::default() }
    }

    #[test]
    fn root_grants_another_user_with_fewer_caps() {
        assert_eq!(root().refusal(&nobody()), None);
        let c = Creds { prm: 1 << 10, eff: 1 << 10, inh: 1 << 10, amb: 1 << 10, secbits: 0x2f, ..nobody() };
        assert_eq!(root().refusal(&c), None);
    }

    #[test]
    fn caps_beyond_ours_are_refused() {
        // CAP_SYS_RESOURCE (24) is missing from our sets.
        let c = Creds { prm: 1 << 24, ..nobody() };
        assert!(root().refusal(&c).unwrap().contains("permitted"), "{:?}", root().refusal(&c));
        let c = Creds { bnd: 0x1ff_ffff_ffff, ..nobody() };
        assert!(root().refusal(&c).unwrap().contains("bounding"));
        let c = Creds { inh: 1 << 24, ..nobody() };
        assert!(root().refusal(&c).unwrap().contains("inheritable"));
    }

    #[test]
    fn unmapped_ids_are_refused() {
        let mut g = root();
        g.uid_map = parse_id_map("0 100000 65536\n");
        g.gid_map = parse_id_map("0 100000 65536\n");
        assert_eq!(g.refusal(&nobody()), None);
        let c = Creds { uids: [70000, 70000, 70000, 70000], ..nobody() };
        assert!(g.refusal(&c).unwrap().contains("uid 70000"));
        let c = Creds { groups: vec![5, 80000], ..nobody() };
        assert!(g.refusal(&c).unwrap().contains("gid 80000"));
    }

    #[test]
    fn without_setuid_only_our_own_ids() {
        let mut g = root();
        g.uids = [1000; 4];
        g.gids = [1000; 4];
        g.prm = 0;
        g.eff = 0;
        g.secbits_settable = false;
        let same = Creds { uids: [1000; 4], gids: [1000; 4], bnd: g.bnd, ..Default::default() };
        assert_eq!(g.refusal(&same), None);
        assert!(g.refusal(&nobody()).unwrap().contains("CAP_SETUID"));
    }

    #[test]
    fn entries_are_checked() {
        let e = pb::CredsEntry {
            uid: Some(1),
            euid: Some(1),
            suid: Some(1),
            fsuid: Some(1),
            gid: Some(2),
            egid: Some(2),
            sgid: Some(2),
            fsgid: Some(2),
            cap_prm: vec![0b11, 0],
            cap_eff: vec![0b1, 0],
            cap_bnd: vec![!0, 0x1ff],
            secbits: Some(0),
            ..Default::default()
        };
        let f = Path::new("core-1.img");
        let c = Creds::from_entry(f, 1, &e).unwrap();
        assert_eq!((c.prm, c.eff, c.bnd), (3, 1, 0x1ff_ffff_ffff));
        let arg = c.to_arg(crate::abi::ArgArray::default());
        assert_eq!((arg.uid, arg.fsgid, arg.cap_bnd), (1, 2, [!0, 0x1ff]));
        let wrong = pb::CredsEntry { cap_eff: vec![0b100], ..e.clone() };
        assert!(Creds::from_entry(f, 1, &wrong).unwrap_err().to_string().contains("effective"));
        let wrong = pb::CredsEntry { cap_amb: vec![0b1], ..e.clone() };
        assert!(Creds::from_entry(f, 1, &wrong).unwrap_err().to_string().contains("ambient"));
        let wrong = pb::CredsEntry { euid: None, ..e.clone() };
        assert!(Creds::from_entry(f, 1, &wrong).unwrap_err().to_string().contains("no euid"));
        let wrong = pb::CredsEntry { cap_prm: vec![1, 2, 3], ..e };
        assert!(Creds::from_entry(f, 1, &wrong).is_err());
    }
}
