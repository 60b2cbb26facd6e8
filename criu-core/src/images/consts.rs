//! Numeric conventions inside image fields (values from CRIU's headers):
//! image version, `vma_entry.status` bits, `pagemap_entry.flags`, task states.

/// `inventory_entry.img_version` of current images (CRIU's `CRTOOLS_IMAGES_V1_1`).
pub const IMG_VERSION: u32 = 2;

/// `vma_entry.status` bits.
pub mod vma_status {
    /// The area is in use (set on every dumped VMA).
    pub const AREA_REGULAR: u32 = 1 << 0;
    /// The main-thread stack (`[stack]`).
    pub const AREA_STACK: u32 = 1 << 1;
    /// `[vsyscall]`.
    pub const AREA_VSYSCALL: u32 = 1 << 2;
    /// `[vdso]`.
    pub const AREA_VDSO: u32 = 1 << 3;
    /// `[heap]`.
    pub const AREA_HEAP: u32 = 1 << 5;
    /// Private file mapping.
    pub const FILE_PRIVATE: u32 = 1 << 6;
    /// Shared file mapping.
    pub const FILE_SHARED: u32 = 1 << 7;
    /// Shared anonymous mapping (contents in `pagemap-shmem-SHMID.img`).
    pub const ANON_SHARED: u32 = 1 << 8;
    /// Private anonymous mapping.
    pub const ANON_PRIVATE: u32 = 1 << 9;
    /// SysV IPC shared memory.
    pub const AREA_SYSVIPC: u32 = 1 << 10;
    /// Socket mapping (packet ring).
    pub const AREA_SOCKET: u32 = 1 << 11;
    /// `[vvar]` (and `[vvar_vclock]`).
    pub const AREA_VVAR: u32 = 1 << 12;
    /// AIO ring.
    pub const AREA_AIORING: u32 = 1 << 13;
    /// memfd-backed mapping.
    pub const AREA_MEMFD: u32 = 1 << 14;
    /// Shadow stack.
    pub const AREA_SHSTK: u32 = 1 << 15;
    /// `MADV_GUARD_INSTALL` range (not a kernel VMA).
    pub const AREA_GUARD: u32 = 1 << 16;
    /// `[uprobes]`.
    pub const AREA_UPROBES: u32 = 1 << 17;
    /// criu-rs's own bit, set with `MAP_LOCKED` in `flags`: the area is
    /// locked on fault (`mlock2(MLOCK_ONFAULT)`, `mlockall(MCL_ONFAULT)`;
    /// `lf` in smaps) rather than populated. CRIU has no such bit (its
    /// restore ignores it and locks the area whole).
    pub const LOCK_ONFAULT: u32 = 1 << 26;
    /// Handled by a plugin.
    pub const EXT_PLUGIN: u32 = 1 << 27;
    /// Unsupported area: never valid in an image.
    pub const UNSUPP: u32 = 1 << 31;
}

/// `pagemap_entry.flags` bits.
pub mod pagemap_flags {
    /// The pages are in the parent image set (incremental dumps).
    pub const PARENT: u32 = 1 << 0;
    /// The pages may be restored lazily (userfaultfd).
    pub const LAZY: u32 = 1 << 1;
    /// The pages are stored in `pages-<pages_id>.img`.
    pub const PRESENT: u32 = 1 << 2;
}

/// `task_core_entry.task_state` values.
pub mod task_state {
    /// Running (or stopped by the dumper) task.
    pub const ALIVE: u32 = 0x01;
    /// Dead task.
    pub const DEAD: u32 = 0x02;
    /// Stopped (SIGSTOP'ed) task.
    pub const STOPPED: u32 = 0x03;
    /// Zombie.
    pub const ZOMBIE: u32 = 0x06;
}

/// Number of `sa_entry`s in `task_core_entry.sigactions`: signals 1..=64
/// except SIGKILL and SIGSTOP, in signal order (CRIU refuses other counts).
pub const SIGACTION_COUNT: usize = 62;

/// Number of `rlimit_entry`s in `task_rlimits_entry` (`RLIM_NLIMITS`), in
/// resource-number order.
pub const RLIMIT_COUNT: usize = 16;

/// Element counts of the repeated fields of the x86 register entries, as
/// CRIU fills and checks them (each equals the kernel structure's size
/// divided by the element size).
pub mod x86 {
    /// `user_x86_fpregs_entry.st_space` (u32): 8 x87 registers, 16 bytes each.
    pub const ST_SPACE: usize = 32;
    /// `user_x86_fpregs_entry.xmm_space` (u32): 16 XMM registers.
    pub const XMM_SPACE: usize = 64;
    /// `user_x86_xsave_entry.ymmh_space` (u32): upper halves of 16 YMM registers.
    pub const YMMH_SPACE: usize = 64;
    /// `user_x86_xsave_entry.bndreg_state` (u64): 4 MPX bound registers.
    pub const BNDREG_STATE: usize = 8;
    /// `user_x86_xsave_entry.bndcsr_state` (u64): MPX config/status, padded to 64 bytes.
    pub const BNDCSR_STATE: usize = 8;
    /// `user_x86_xsave_entry.opmask_reg` (u64): AVX-512 k0..k7.
    pub const OPMASK_REG: usize = 8;
    /// `user_x86_xsave_entry.zmm_upper` (u64): upper 256 bits of ZMM0..15.
    pub const ZMM_UPPER: usize = 64;
    /// `user_x86_xsave_entry.hi16_zmm` (u64): ZMM16..31.
    pub const HI16_ZMM: usize = 128;
    /// `user_x86_xsave_entry.pkru` (u32): PKRU and its padding word.
    pub const PKRU: usize = 2;
    /// `thread_core_entry.futex_rla_len`: size of `struct robust_list_head`.
    pub const ROBUST_LIST_HEAD_LEN: u32 = 24;
}
