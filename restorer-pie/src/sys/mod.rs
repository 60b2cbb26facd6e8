//! Raw Linux syscalls for the blob (x86_64), over the `syscalls` crate.
//!
//! Every wrapper is named after its syscall, has a doc line giving the call
//! form, and returns `Result<_, Errno>`: the kernel's `-4095..=-1` return
//! range is decoded into an [`Errno`] by [`decode`]. No libc is involved
//! and nothing here allocates or formats.
//!
//! Adding a wrapper: pick the file for its area (`mm`, `io`, `signal`,
//! `process`), write `pub unsafe fn NAME(args) -> Result<usize, Errno>` (or
//! a safe fn when every argument is checked by its type) calling
//! `syscall!(Sysno::NAME, ...)`, with a `/// `NAME(args)`` doc line and a
//! `// SAFETY:` comment; it is re-exported from here.

mod io;
mod mm;
mod process;
mod signal;
mod task;

pub use io::*;
pub use mm::*;
pub use process::*;
pub use signal::*;
pub use task::*;

pub use syscalls::{Errno, Sysno};

/// Decodes a raw syscall return value: `-4095..=-1` is an errno, anything
/// else a result.
#[inline]
pub fn decode(ret: usize) -> Result<usize, Errno> {
    Errno::from_ret(ret)
}

/// The positive errno number of `e` (e.g. 9 for EBADF).
#[inline]
pub fn errno_value(e: Errno) -> i32 {
    e.into_raw()
}

/// `e` as the negative status an entry point returns (e.g. -9 for EBADF).
#[inline]
pub fn neg_errno(e: Errno) -> i64 {
    -i64::from(e.into_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_splits_errors_from_results() {
        assert_eq!(decode(0), Ok(0));
        assert_eq!(decode(4096), Ok(4096));
        assert_eq!(decode((-9isize) as usize), Err(Errno::EBADF));
        assert_eq!(decode((-4095isize) as usize).map_err(errno_value), Err(4095));
        // -4096 is a valid (huge) result, not an error.
        assert!(decode((-4096isize) as usize).is_ok());
        assert_eq!(neg_errno(Errno::ENOENT), -2);
    }
}
