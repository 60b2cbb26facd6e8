//! Classifying the areas of `/proc/PID/smaps` the way CRIU images describe
//! them: `MAP_*` flags, `VMA_*` status bits and `madvise` advice.
//!
//! # Memory whose physical pages must not change
//! The blob can leave an area alone (`VMA_PINNED`: created at its final
//! address before the blob runs, kept through the unmap of the old world).
//! What a dump on this kernel can meet of that sort, and what becomes of it:
//! - RAM pinned by a holder (`pin_user_pages`: io_uring registered
//!   buffers, RDMA memory regions, vfio DMA maps). The kernel counts it per
//!   process (`VmPin` in `status`), not per area. The holder goes on using
//!   the old physical pages, which a restored process no longer has, and
//!   the holder itself (an io_uring or RDMA fd, possibly in a process
//!   outside the tree) is not restored: the dump refuses the process by
//!   name ([`pinned_memory`]) rather than bring back memory nobody sees.
//! - Device memory a driver maps (`VM_IO`/`VM_PFNMAP`, smaps `io`/`pf`):
//!   not RAM, so its contents cannot be read into an image; the only
//!   faithful restore maps the same device range again at the same
//!   address, which is what `VMA_PINNED` is for. On this machine every such
//!   area belongs to something criu-rs does not restore as a file: `[vvar]`
//!   (handled apart) and perf_event rings; device nodes that map memory
//!   (`/dev/mem`: CONFIG_DEVMEM off; uio, vfio, PCI `resourceN` files: none
//!   present) do not exist, so a restore path for them could not be tested
//!   and they are refused by name ([`unsupported_reason`]), as CRIU does.
//! - `[vsyscall]` is the kernel's and is neither dumped nor mapped.

use super::model::Vma;
use crate::proc::maps::{vmflag, MapEntry};

/// CRIU `VMA_*` status bits (image ABI), as the images module defines them.
pub use crate::images::consts::vma_status as status;

const MAP_SHARED: u32 = 0x01;
const MAP_PRIVATE: u32 = 0x02;
/// A map type of its own (instead of private): pages the kernel may drop.
const MAP_DROPPABLE: u32 = 0x08;
const MAP_ANONYMOUS: u32 = 0x20;
const MAP_GROWSDOWN: u32 = 0x100;
const MAP_LOCKED: u32 = 0x2000;
const MAP_NORESERVE: u32 = 0x4000;

/// `madvise` advice numbers (`MADV_*`).
const MADV_RANDOM: u32 = 1;
const MADV_SEQUENTIAL: u32 = 2;
const MADV_DONTFORK: u32 = 10;
const MADV_MERGEABLE: u32 = 12;
const MADV_HUGEPAGE: u32 = 14;
const MADV_NOHUGEPAGE: u32 = 15;
const MADV_DONTDUMP: u32 = 16;
const MADV_WIPEONFORK: u32 = 18;

/// The `VmFlags` bits that show a `madvise` advice, and the advice.
const MADV_OF_VMFLAG: [(u64, u32); 8] = [
    (vmflag::RAND_READ, MADV_RANDOM),
    (vmflag::SEQ_READ, MADV_SEQUENTIAL),
    (vmflag::DONTCOPY, MADV_DONTFORK),
    (vmflag::MERGEABLE, MADV_MERGEABLE),
    (vmflag::HUGEPAGE, MADV_HUGEPAGE),
    (vmflag::NOHUGEPAGE, MADV_NOHUGEPAGE),
    (vmflag::DONTDUMP, MADV_DONTDUMP),
    (vmflag::WIPEONFORK, MADV_WIPEONFORK),
];

/// The `madv` bits (`1 << MADV_*`) [`classify`] can see in `VmFlags`.
pub const MADV_SHOWN: u64 = {
    let mut m = 0u64;
    let mut i = 0;
    while i < MADV_OF_VMFLAG.len() {
        m |= 1 << MADV_OF_VMFLAG[i].1;
        i += 1;
    }
    m
};

/// The `MAP_*` bits [`classify`] sets from `VmFlags`, besides
/// shared/private and anonymous.
pub const MAP_SHOWN: u32 = MAP_GROWSDOWN | MAP_LOCKED | MAP_NORESERVE;

/// Describes one smaps area as an image VMA (file ids are filled in later).
pub fn classify(m: &MapEntry) -> Vma {
    let bit = |on: bool, v: libc::c_int| if on { v as u32 } else { 0 };
    let prot = bit(m.read, libc::PROT_READ) | bit(m.write, libc::PROT_WRITE) | bit(m.exec, libc::PROT_EXEC);
    let mut flags = match (m.shared, m.has(vmflag::DROPPABLE)) {
        (true, _) => MAP_SHARED,
        (false, true) => MAP_DROPPABLE,
        (false, false) => MAP_PRIVATE,
    };
    if m.has(vmflag::GROWSDOWN) {
        flags |= MAP_GROWSDOWN;
    }
    if m.has(vmflag::LOCKED) {
        flags |= MAP_LOCKED;
    }
    if m.has(vmflag::NORESERVE) {
        flags |= MAP_NORESERVE;
    }
    let mut madv = 0u64;
    for (bit, adv) in MADV_OF_VMFLAG {
        if m.has(bit) {
            madv |= 1 << adv;
        }
    }
    let st = match m.path.as_str() {
        "[vsyscall]" => status::AREA_VSYSCALL,
        "[vdso]" => status::AREA_REGULAR | status::AREA_VDSO | status::ANON_PRIVATE,
        "[vvar]" | "[vvar_vclock]" => status::AREA_REGULAR | status::AREA_VVAR | status::ANON_PRIVATE,
        _ if m.has(vmflag::IO) || m.has(vmflag::PFNMAP) || m.has(vmflag::HUGETLB) => status::UNSUPP,
        // As CRIU writes them: shared anonymous memory of SysV kind, `shmid`
        // the segment id (the inode number of its shmem file).
        p if p.starts_with("/SYSV") && m.shared => status::AREA_REGULAR | status::ANON_SHARED | status::AREA_SYSVIPC,
        _ if m.is_anon() => {
            let mut s = status::AREA_REGULAR | if m.shared { status::ANON_SHARED } else { status::ANON_PRIVATE };
            if m.path == "[heap]" {
                s |= status::AREA_HEAP;
            }
            if m.path == "[stack]" {
                s |= status::AREA_STACK;
            }
            s
        }
        _ if m.shared && (m.path == "/dev/zero" || m.path.starts_with("/dev/zero")) && m.deleted => {
            status::AREA_REGULAR | status::ANON_SHARED
        }
        _ => status::AREA_REGULAR | if m.shared { status::FILE_SHARED } else { status::FILE_PRIVATE },
    };
    if st & status::ANON_PRIVATE != 0 || st & status::ANON_SHARED != 0 {
        flags |= MAP_ANONYMOUS;
    }
    let st = if m.has(vmflag::LOCKED) && m.has(vmflag::LOCKONFAULT) { st | status::LOCK_ONFAULT } else { st };
    Vma { map: m.clone(), prot, mmap_flags: flags, status: st, madv, file_id: 0 }
}

/// Whether `m` is a private mapping of shared anonymous memory (mapped
/// again through `/proc/PID/map_files`, it shows as a deleted `/dev/zero`).
/// Its pages nobody wrote read the object as it is now: it is dumped, as
/// CRIU does, as an area of a memfd inode named `/dev/zero` (the object).
pub fn private_shmem(m: &MapEntry) -> bool {
    !m.shared && m.inode != 0 && m.deleted && m.path == "/dev/zero"
}

/// Why the dump refuses a process with pinned memory (`VmPin`, in kB).
pub fn pinned_memory(kb: u64) -> String {
    format!(
        "{kb} kB of memory pinned (VmPin: io_uring registered buffers, RDMA or vfio registrations); \
         the holder would keep using the old pages, not the restored ones"
    )
}

/// Why an area [`classify`] marked `UNSUPP` cannot be dumped.
pub fn unsupported_reason(m: &MapEntry) -> &'static str {
    if m.has(vmflag::HUGETLB) {
        "hugetlbfs memory is not supported"
    } else {
        "device memory mapped by a driver (VM_IO/VM_PFNMAP): not RAM a dump can read, and not restorable by criu-rs"
    }
}

impl Vma {
    /// Whether this area's pages go into the process's pages image (not
    /// for droppable memory, whose pages the kernel may drop at any time:
    /// it comes back empty, as from CRIU).
    pub fn dumps_private_pages(&self) -> bool {
        self.status & status::AREA_REGULAR != 0
            && self.mmap_flags & 0x0f != MAP_DROPPABLE
            && self.status & (status::AREA_VVAR | status::FILE_SHARED | status::ANON_SHARED | status::AREA_SYSVIPC) == 0
            && self.status & status::UNSUPP == 0
    }

    /// Whether this is a mapping of a shared anonymous memory object the
    /// dump saves (`MAP_SHARED|MAP_ANONYMOUS`; not a SysV segment, which
    /// stays in the kernel).
    pub fn is_shmem_object(&self) -> bool {
        self.status & status::ANON_SHARED != 0 && self.status & status::AREA_SYSVIPC == 0
    }

    /// Whether pages still shared with the page cache may be left out (a
    /// private file mapping reads them from the file again).
    pub fn file_pages_implicit(&self) -> bool {
        self.status & status::FILE_PRIVATE != 0
    }

    /// Whether an all-zero page here may be left out (anonymous memory reads
    /// back as zeros when absent; a file page would read the file instead).
    pub fn zero_pages_implicit(&self) -> bool {
        self.status & status::ANON_PRIVATE != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, shared: bool, inode: u64, flags: u64) -> MapEntry {
        MapEntry {
            start: 0x1000,
            end: 0x3000,
            read: true,
            write: true,
            exec: false,
            shared,
            offset: 0,
            dev: (0, 0),
            inode,
            path: path.into(),
            deleted: false,
            vmflags: flags,
        }
    }

    #[test]
    fn kinds() {
        let s = classify(&entry("[stack]", false, 0, vmflag::GROWSDOWN | vmflag::DONTCOPY));
        assert_eq!(s.status, status::AREA_REGULAR | status::ANON_PRIVATE | status::AREA_STACK);
        assert_eq!(s.mmap_flags, MAP_PRIVATE | MAP_GROWSDOWN | MAP_ANONYMOUS);
        assert_eq!(s.madv, 1 << MADV_DONTFORK);
        assert!(s.dumps_private_pages() && s.zero_pages_implicit());
        let f = classify(&entry("/usr/lib/libc.so.6", false, 42, 0));
        assert_eq!(f.status, status::AREA_REGULAR | status::FILE_PRIVATE);
        assert!(f.dumps_private_pages() && !f.zero_pages_implicit());
        let sh = classify(&entry("/tmp/x", true, 42, vmflag::LOCKED));
        assert_eq!(sh.status, status::AREA_REGULAR | status::FILE_SHARED);
        assert_eq!(sh.mmap_flags, MAP_SHARED | MAP_LOCKED);
        assert!(!sh.dumps_private_pages());
        assert_eq!(classify(&entry("[vsyscall]", false, 0, 0)).status, status::AREA_VSYSCALL);
        let dp = classify(&entry("", false, 0, vmflag::DROPPABLE | vmflag::WIPEONFORK | vmflag::DONTDUMP));
        assert_eq!(dp.mmap_flags, MAP_DROPPABLE | MAP_ANONYMOUS);
        assert!(!dp.dumps_private_pages());
        let lf = classify(&entry("", false, 0, vmflag::LOCKED | vmflag::LOCKONFAULT));
        assert_eq!(lf.status, status::AREA_REGULAR | status::ANON_PRIVATE | status::LOCK_ONFAULT);
        assert_eq!(lf.mmap_flags, MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED);
        assert!(!classify(&entry("[vvar]", false, 0, 0)).dumps_private_pages());
    }
}
