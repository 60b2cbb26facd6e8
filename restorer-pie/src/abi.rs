//! The argument ABI between criu-core and the restorer blob.
//!
//! Every struct here is `#[repr(C)]` and holds integers and offsets only
//! (never pointers, never protobuf types). This file is compiled into both
//! the blob and criu-core.

// ---------------------------------------------------------------------------
// Self-test entries (blob pipeline). Restore structs go in their own section
// below this one; append, do not reorder.
// ---------------------------------------------------------------------------

/// Arguments of the `pie_selftest_reloc` entry: it walks a static table of
/// string slices and function pointers (all needing load-time relocation)
/// and reports what it saw.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SelftestRelocArgs {
    /// Out: checksum over the table; must equal [`SELFTEST_RELOC_CHECKSUM`].
    pub checksum: u64,
    /// Out: run-time address of the table itself (inside the loaded blob).
    pub table_addr: u64,
    /// Out: a string pointer read from the table (inside the loaded blob
    /// only if the relocation was applied).
    pub name_addr: u64,
    /// Out: a function pointer read from the table (same).
    pub fn_addr: u64,
}

/// The checksum `pie_selftest_reloc` computes when its table is intact:
/// for the names "alpha", "bravo", "charlie" with byte sums 518, 538, 728,
/// `(518 + 1) + (538 * 2) + 728 * 728`.
pub const SELFTEST_RELOC_CHECKSUM: u64 = 519 + 1076 + 529_984;

/// Arguments of the `pie_selftest_syscall` entry: two syscalls that must
/// fail, and the errno each one decoded to.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SelftestSyscallArgs {
    /// Out: errno of `close(-1)` (EBADF, 9).
    pub close_errno: i32,
    /// Out: errno of `openat(AT_FDCWD, SELFTEST_MISSING_PATH, O_RDONLY)`
    /// (ENOENT, 2).
    pub open_errno: i32,
}

/// The path `pie_selftest_syscall` tries to open (NUL-terminated).
pub const SELFTEST_MISSING_PATH: &[u8] = b"/nonexistent/criu-rs-pie-selftest\0";

/// Arguments of the `pie_selftest_write` entry. It runs, in this order,
/// `getpid()`, `write(fd, SELFTEST_WRITE_MESSAGE, len)`, `gettid()`: a
/// sequence tests look for in `qemu-x86_64 -strace` output.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SelftestWriteArgs {
    /// In: the file descriptor to write to.
    pub fd: i32,
    /// Padding; keep zero.
    pub _pad: u32,
    /// Out: the pid `getpid()` returned.
    pub pid: u64,
    /// Out: the tid `gettid()` returned.
    pub tid: u64,
}

/// The message `pie_selftest_write` writes.
pub const SELFTEST_WRITE_MESSAGE: &[u8] = b"criu-rs pie: hello from the restorer blob\n";
