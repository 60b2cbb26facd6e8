//! Conveniences on generated entry types where CRIU's conventions are not
//! visible in the schema: the inventory of a dump, files without an owner,
//! page counts in `pagemap_entry`, and the entries that are followed by a
//! raw payload.

use super::consts::IMG_VERSION;
use super::pb::{
    FdTypes, FileEntry, FownEntry, GhostChunkEntry, InventoryEntry, Lsmtype, MmEntry, PagemapEntry,
    PipeDataEntry, RegFileEntry, SkPacketEntry, TaskKobjIdsEntry,
};

impl InventoryEntry {
    /// The inventory of a dump as current CRIU writes it: image version 2,
    /// one fdinfo image per files id, namespaces per id, `root_ids` of the
    /// dumping process itself, and the host LSM.
    pub fn for_dump(root_ids: TaskKobjIdsEntry, lsm: Lsmtype) -> Self {
        InventoryEntry {
            img_version: Some(IMG_VERSION),
            fdinfo_per_id: Some(true),
            root_ids: Some(root_ids),
            ns_per_id: Some(true),
            lsmtype: Some(lsm as i32),
            ..Default::default()
        }
    }
}

impl FownEntry {
    /// The owner of a file nobody called `F_SETOWN`/`F_SETSIG` on: no
    /// pid, no signal, uids 0 (as CRIU records it).
    pub fn unowned() -> Self {
        FownEntry { uid: Some(0), euid: Some(0), signum: Some(0), pid_type: Some(0), pid: Some(0) }
    }
}

impl FileEntry {
    /// A regular file's entry: description `id` of `path` opened with
    /// `flags` (`O_*`), at offset 0, unowned; other fields unset.
    pub fn reg(id: u32, path: &str, flags: u32) -> Self {
        FileEntry {
            r#type: Some(FdTypes::Reg as i32),
            id: Some(id),
            reg: Some(RegFileEntry {
                id: Some(id),
                flags: Some(flags),
                pos: Some(0),
                fown: Some(FownEntry::unowned()),
                name: Some(path.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Checks that the sub-message named by `type` is present and no other
    /// is (`file_entry` is a union); returns the problem if not.
    pub fn union_error(&self) -> Option<String> {
        let present: Vec<&'static str> = [
            ("reg", self.reg.is_some()),
            ("isk", self.isk.is_some()),
            ("nsf", self.nsf.is_some()),
            ("psk", self.psk.is_some()),
            ("nlsk", self.nlsk.is_some()),
            ("efd", self.efd.is_some()),
            ("epfd", self.epfd.is_some()),
            ("sgfd", self.sgfd.is_some()),
            ("tunf", self.tunf.is_some()),
            ("tfd", self.tfd.is_some()),
            ("ify", self.ify.is_some()),
            ("ffy", self.ffy.is_some()),
            ("ext", self.ext.is_some()),
            ("usk", self.usk.is_some()),
            ("fifo", self.fifo.is_some()),
            ("pipe", self.pipe.is_some()),
            ("tty", self.tty.is_some()),
            ("memfd", self.memfd.is_some()),
            ("bpf", self.bpf.is_some()),
            ("pidfd", self.pidfd.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        let want = match FdTypes::try_from(self.r#type.unwrap_or(0)) {
            Ok(FdTypes::Reg) => "reg",
            Ok(FdTypes::Inetsk) => "isk",
            Ok(FdTypes::Ns) => "nsf",
            Ok(FdTypes::Packetsk) => "psk",
            Ok(FdTypes::Netlinksk) => "nlsk",
            Ok(FdTypes::Eventfd) => "efd",
            Ok(FdTypes::Eventpoll) => "epfd",
            Ok(FdTypes::Signalfd) => "sgfd",
            Ok(FdTypes::Tunf) => "tunf",
            Ok(FdTypes::Timerfd) => "tfd",
            Ok(FdTypes::Inotify) => "ify",
            Ok(FdTypes::Fanotify) => "ffy",
            Ok(FdTypes::Ext) => "ext",
            Ok(FdTypes::Unixsk) => "usk",
            Ok(FdTypes::Fifo) => "fifo",
            Ok(FdTypes::Pipe) => "pipe",
            Ok(FdTypes::Tty) => "tty",
            Ok(FdTypes::Memfd) => "memfd",
            Ok(FdTypes::Bpfmap) => "bpf",
            Ok(FdTypes::Pidfd) => "pidfd",
            _ => {
                return Some(format!(
                    "file type {} is not a storable type",
                    self.r#type.unwrap_or(0)
                ))
            }
        };
        match present.as_slice() {
            [only] if *only == want => None,
            [] => Some(format!("type {want} without its `{want}` part")),
            _ => Some(format!("type {want} with parts {present:?}")),
        }
    }
}

impl PagemapEntry {
    /// An entry for `nr_pages` pages at `vaddr` with `flags`
    /// ([`pagemap_flags`](super::consts::pagemap_flags)). Fills both the
    /// 64-bit `nr_pages` (current CRIU) and the 32-bit field 2 that older
    /// readers (such as Debian's crit 3.17) take as the page count.
    pub fn new(vaddr: u64, nr_pages: u64, flags: u32) -> Self {
        PagemapEntry {
            vaddr: Some(vaddr),
            compat_nr_pages: Some(u32::try_from(nr_pages).unwrap_or(0)),
            // Older readers know only the bool for pages in the parent.
            in_parent: (flags & super::consts::pagemap_flags::PARENT != 0).then_some(true),
            flags: Some(flags),
            nr_pages: Some(nr_pages),
        }
    }

    /// The page count: `nr_pages` if present, else the old 32-bit field.
    pub fn page_count(&self) -> u64 {
        self.nr_pages
            .unwrap_or_else(|| u64::from(self.compat_nr_pages.unwrap_or(0)))
    }
}

/// An entry that is followed in its image by a raw payload whose length it
/// records.
pub trait Payload {
    /// Length in bytes of the raw data following the entry.
    fn payload_len(&self) -> u64;
}

impl Payload for PipeDataEntry {
    fn payload_len(&self) -> u64 {
        u64::from(self.bytes.unwrap_or(0))
    }
}

impl Payload for GhostChunkEntry {
    fn payload_len(&self) -> u64 {
        self.len.unwrap_or(0)
    }
}

impl Payload for SkPacketEntry {
    fn payload_len(&self) -> u64 {
        u64::from(self.length.unwrap_or(0))
    }
}

/// CRIU's `AT_VECTOR_SIZE` on x86_64, in words: its dump reads no more of
/// `/proc/PID/auxv`, and its restore refuses a longer `mm_saved_auxv`.
pub const AT_VECTOR_SIZE: usize = 44;

impl MmEntry {
    /// Stores the auxiliary vector `pairs` (without AT_NULL): in
    /// `mm_saved_auxv` as many as CRIU's restore takes ([`AT_VECTOR_SIZE`]
    /// words with the AT_NULL pair), the rest (kernels since 6.3 give about
    /// 24 pairs) in criu-rs's `criu_rs_auxv_tail`.
    pub fn set_auxv(&mut self, pairs: &[(u64, u64)]) {
        let fit = AT_VECTOR_SIZE / 2 - 1;
        let pairs: Vec<(u64, u64)> = pairs.iter().copied().take_while(|&(k, _)| k != 0).collect();
        let (head, tail) = pairs.split_at(pairs.len().min(fit));
        self.mm_saved_auxv = head.iter().flat_map(|&(k, v)| [k, v]).chain([0, 0]).collect();
        self.criu_rs_auxv_tail = tail.iter().flat_map(|&(k, v)| [k, v]).collect();
    }

    /// The whole auxiliary vector in words, AT_NULL last: `mm_saved_auxv`
    /// (CRIU's, possibly cut at [`AT_VECTOR_SIZE`] words without AT_NULL)
    /// followed by criu-rs's tail.
    pub fn auxv(&self) -> Vec<u64> {
        let mut pairs: Vec<u64> = self.mm_saved_auxv.chunks_exact(2).take_while(|p| p[0] != 0).flatten().copied().collect();
        if !self.criu_rs_auxv_tail.is_empty() {
            pairs.extend(self.criu_rs_auxv_tail.chunks_exact(2).take_while(|p| p[0] != 0).flatten());
        }
        pairs.extend([0, 0]);
        pairs
    }
}

#[cfg(test)]
mod auxv_tests {
    use super::*;

    #[test]
    fn auxv_fits_criu_s_vector_and_comes_back_whole() {
        let long: Vec<(u64, u64)> = (1..=24).map(|k| (k, k * 10)).collect();
        let mut mm = MmEntry::default();
        mm.set_auxv(&long);
        assert_eq!(mm.mm_saved_auxv.len(), AT_VECTOR_SIZE);
        assert_eq!(&mm.mm_saved_auxv[AT_VECTOR_SIZE - 2..], [0, 0]);
        assert_eq!(mm.criu_rs_auxv_tail, [22, 220, 23, 230, 24, 240]);
        let whole = mm.auxv();
        assert_eq!(whole.len(), 2 * 24 + 2);
        assert_eq!(&whole[..2], [1, 10]);
        assert_eq!(&whole[46..], [24, 240, 0, 0]);
        // Short vectors and CRIU's own (44 words, no AT_NULL, no tail).
        mm.set_auxv(&[(6, 4096)]);
        assert_eq!((mm.mm_saved_auxv.clone(), mm.auxv()), (vec![6, 4096, 0, 0], vec![6, 4096, 0, 0]));
        let criu = MmEntry { mm_saved_auxv: (1..=44).collect(), ..Default::default() };
        assert_eq!(criu.auxv().len(), 46);
    }
}
