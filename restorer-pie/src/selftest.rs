//! Self-test entry logic: checks that the loaded blob was relocated right
//! and that its syscall layer works, from inside the blob.

use crate::abi::{SelftestRelocArgs, SelftestSyscallArgs, SelftestWriteArgs, SELFTEST_MISSING_PATH, SELFTEST_WRITE_MESSAGE};
use crate::sys;
use core::ffi::CStr;
use core::hint::black_box;

/// A name and a function, both pointers in a static.
type Row = (&'static str, fn(u64) -> u64);

/// A static table whose every field is a pointer the loader must relocate.
static TABLE: [Row; 3] = [("alpha", plus_one), ("bravo", twice), ("charlie", square)];

fn plus_one(x: u64) -> u64 {
    x.wrapping_add(1)
}

fn twice(x: u64) -> u64 {
    x.wrapping_mul(2)
}

fn square(x: u64) -> u64 {
    x.wrapping_mul(x)
}

/// Walks [`TABLE`] (through `black_box`, so the compiler cannot fold it at
/// build time) and reports the checksum and a few addresses.
pub fn reloc(args: &mut SelftestRelocArgs) -> i64 {
    let table = black_box(&TABLE);
    let mut sum = 0u64;
    for (name, f) in table.iter() {
        let bytes = name.bytes().fold(0u64, |acc, b| acc.wrapping_add(u64::from(b)));
        sum = sum.wrapping_add(f(bytes));
    }
    args.checksum = sum;
    args.table_addr = table.as_ptr() as u64;
    args.name_addr = table.first().map_or(0, |(name, _)| name.as_ptr() as u64);
    args.fn_addr = table.first().map_or(0, |(_, f)| *f as usize as u64);
    0
}

/// Runs two syscalls that must fail and records their errnos.
pub fn syscall(args: &mut SelftestSyscallArgs) -> i64 {
    args.close_errno = match sys::close(-1) {
        Ok(_) => 0,
        Err(e) => sys::errno_value(e),
    };
    let path = match CStr::from_bytes_with_nul(SELFTEST_MISSING_PATH) {
        Ok(p) => p,
        Err(_) => return -22,
    };
    args.open_errno = match sys::openat(linux_raw_sys::general::AT_FDCWD, path, linux_raw_sys::general::O_RDONLY, 0) {
        Ok(fd) => {
            // Unexpectedly there: do not leak the descriptor.
            let _ = sys::close(fd as i32);
            0
        }
        Err(e) => sys::errno_value(e),
    };
    0
}

/// `getpid()`, `write(fd, message)`, `gettid()`; returns the bytes written
/// or a negative errno.
pub fn write(args: &mut SelftestWriteArgs) -> i64 {
    args.pid = sys::getpid().unwrap_or(0) as u64;
    let status = match sys::write(args.fd, SELFTEST_WRITE_MESSAGE) {
        Ok(n) => n as i64,
        Err(e) => sys::neg_errno(e),
    };
    args.tid = sys::gettid().unwrap_or(0) as u64;
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::SELFTEST_RELOC_CHECKSUM;

    #[test]
    fn reloc_checksum_matches_the_abi_constant() {
        let mut a = SelftestRelocArgs::default();
        assert_eq!(reloc(&mut a), 0);
        assert_eq!(a.checksum, SELFTEST_RELOC_CHECKSUM);
        assert_ne!(a.name_addr, 0);
    }

    #[test]
    fn syscall_errnos_decode() {
        let mut a = SelftestSyscallArgs::default();
        assert_eq!(syscall(&mut a), 0);
        assert_eq!((a.close_errno, a.open_errno), (9, 2));
    }

    #[test]
    fn write_to_a_closed_fd_reports_ebadf() {
        let mut a = SelftestWriteArgs { fd: -1, ..Default::default() };
        assert_eq!(write(&mut a), -9);
        assert_eq!(a.pid, u64::from(std::process::id()));
    }
}
