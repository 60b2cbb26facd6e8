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
