//! The restore context: the argument block as the blob sees it, with
//! bounds-checked access to its arrays and areas, progress reporting in
//! [`RestoreStatus`], and the failure path (log line, status, exit_group).

use crate::abi::{
    ArgArray, MemRange, RestoreArgs, RestoreStatus, StageMark, ERR_BAD_ARRAY, ERR_BAD_HEADER, RESTORE_MAGIC, RESTORE_VERSION,
    TRAIL_LEN,
};
use crate::sys;
use core::mem::{align_of, size_of};
use core::ptr;

/// Why a stage failed: an error code (negative errno or `ERR_*`), a detail
/// value, and a short message for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fail {
    pub error: i64,
    pub detail: u64,
    pub msg: &'static [u8],
}

impl Fail {
    pub const fn new(error: i64, detail: u64, msg: &'static [u8]) -> Self {
        Self { error, detail, msg }
    }

    /// A failed syscall.
    pub fn errno(e: sys::Errno, detail: u64, msg: &'static [u8]) -> Self {
        Self::new(sys::neg_errno(e), detail, msg)
    }
}

/// Stage result.
pub type Step<T = ()> = Result<T, Fail>;

/// The argument block, checked once at entry.
pub struct Ctx {
    /// Address of the block (== `args.args.start`).
    base: usize,
    /// A copy of the header (the block's header is only written through
    /// `status`).
    pub args: RestoreArgs,
}

impl Ctx {
    /// Checks the header at `base` and wraps it.
    ///
    /// # Safety
    /// `base` must point to the argument block, mapped readable and
    /// writable for at least `size_of::<RestoreArgs>()` bytes and, if the
    /// header says so, `total_size` bytes, for the life of the `Ctx`.
    pub unsafe fn new(base: *mut u8) -> Result<Self, (usize, Fail)> {
        let bad = |d: u64| Fail::new(ERR_BAD_HEADER, d, b"bad argument header");
        if base.is_null() || !(base as usize).is_multiple_of(align_of::<RestoreArgs>()) {
            return Err((0, bad(base as u64)));
        }
        // SAFETY: the caller guarantees the header is mapped; alignment checked.
        let args = unsafe { ptr::read(base.cast::<RestoreArgs>()) };
        let ctx = Self { base: base as usize, args };
        let a = &ctx.args;
        if a.magic != RESTORE_MAGIC || a.version != RESTORE_VERSION {
            return Err((ctx.base, bad(a.magic)));
        }
        if a.header_size as usize != size_of::<RestoreArgs>()
            || a.total_size < size_of::<RestoreArgs>() as u64
            || a.total_size > a.args.len
            || a.args.start != ctx.base as u64
        {
            return Err((ctx.base, bad(a.total_size)));
        }
        Ok(ctx)
    }

    /// Elements of array `a` inside the block.
    pub fn array<T>(&self, a: ArgArray) -> Step<&[T]> {
        let bad = Fail::new(ERR_BAD_ARRAY, a.off, b"array outside the argument block");
        if a.count == 0 {
            return Ok(&[]);
        }
        let bytes = a.count.checked_mul(size_of::<T>() as u64).ok_or(bad)?;
        let end = a.off.checked_add(bytes).ok_or(bad)?;
        if a.off < size_of::<RestoreArgs>() as u64 || end > self.args.total_size || !a.off.is_multiple_of(align_of::<T>() as u64) {
            return Err(bad);
        }
        // SAFETY: the range lies inside the block (checked above against
        // total_size, which `new` checked against the mapped args area), is
        // aligned for T, and T is a plain integer struct valid for any bytes.
        Ok(unsafe { core::slice::from_raw_parts((self.base + a.off as usize) as *const T, a.count as usize) })
    }

    /// A byte array inside the block (`count` = length in bytes).
    pub fn bytes(&self, a: ArgArray) -> Step<&[u8]> {
        self.array::<u8>(a)
    }

    /// An area inside the `args` range (scratch, thread stacks) as bytes.
    ///
    /// # Safety
    /// No other live reference may cover the same bytes (in particular not
    /// one from [`Ctx::array`]) for the chosen lifetime `'a` (at most as
    /// long as the block stays mapped); the caller's stack may lie in the
    /// area only where it does not write.
    pub unsafe fn area_mut<'a>(&self, r: MemRange) -> Step<&'a mut [u8]> {
        let bad = Fail::new(ERR_BAD_ARRAY, r.start, b"area outside the argument area");
        let end = r.start.checked_add(r.len).ok_or(bad)?;
        let a = self.args.args;
        if r.start < a.start + size_of::<RestoreArgs>() as u64 || end > a.start + a.len {
            return Err(bad);
        }
        // SAFETY: inside the mapped, writable args area; exclusivity is the
        // caller's promise.
        Ok(unsafe { core::slice::from_raw_parts_mut(r.start as *mut u8, r.len as usize) })
    }

    fn status_ptr(&self) -> *mut RestoreStatus {
        (self.base + core::mem::offset_of!(RestoreArgs, status)) as *mut RestoreStatus
    }

    /// Records the stage the blob is entering, and appends it with the
    /// time to the status's trail.
    pub fn stage(&self, stage: u32) {
        let s = self.status_ptr();
        // SAFETY: the status field lies in the checked, writable header.
        unsafe { ptr::write_volatile(ptr::addr_of_mut!((*s).stage), stage) }
        // SAFETY: `trail_len` lies in the checked, writable header, is
        // 4-byte aligned (the header is 8-byte aligned) and is only ever
        // accessed atomically by the threads of the blob.
        let len = unsafe { core::sync::atomic::AtomicU32::from_ptr(ptr::addr_of_mut!((*s).trail_len)) };
        let i = len.fetch_add(1, core::sync::atomic::Ordering::SeqCst) as usize;
        if i < TRAIL_LEN {
            let mark = StageMark { stage, _pad: 0, ns: sys::monotonic_ns() };
            // SAFETY: slot `i` is inside the trail array of the header and
            // was handed to this call alone by the atomic counter.
            unsafe { ptr::write_volatile(ptr::addr_of_mut!((*s).trail[i]), mark) }
        }
    }

    /// The stage last recorded.
    pub fn current_stage(&self) -> u32 {
        // SAFETY: as for `stage`.
        unsafe { ptr::read_volatile(ptr::addr_of!((*self.status_ptr()).stage)) }
    }

    /// Counts one more thread done with its credentials
    /// ([`RestoreArgs::creds_done`]); returns the count including it.
    pub fn count_creds_done(&self) -> u64 {
        let at = (self.base + core::mem::offset_of!(RestoreArgs, creds_done)) as *mut u32;
        // SAFETY: the field lies in the checked, writable header, is
        // 4-byte aligned (the header is 8-byte aligned) and is only ever
        // accessed atomically by the threads of the blob.
        let counter = unsafe { core::sync::atomic::AtomicU32::from_ptr(at) };
        u64::from(counter.fetch_add(1, core::sync::atomic::Ordering::SeqCst)) + 1
    }

    /// Writes a log line for a non-fatal problem.
    pub fn warn(&self, f: Fail) {
        log_line(self.args.log_fd, b"warning", self.current_stage(), f);
    }

    /// Records `f` in the status and logs it.
    pub fn record(&self, f: Fail) {
        // SAFETY: as for `stage`.
        unsafe {
            let s = self.status_ptr();
            ptr::write_volatile(ptr::addr_of_mut!((*s).error), f.error);
            ptr::write_volatile(ptr::addr_of_mut!((*s).detail), f.detail);
        }
        log_line(self.args.log_fd, b"error", self.current_stage(), f);
    }

    /// Records `f` in the status, logs it and ends the process.
    pub fn die(&self, f: Fail) -> ! {
        self.record(f);
        sys::exit_group(1)
    }
}

/// Appends `0x` + lowercase hex of `v` to `buf` at `*at`.
pub fn put_hex(buf: &mut [u8], at: &mut usize, v: u64) {
    put_str(buf, at, b"0x");
    let mut started = false;
    for shift in (0..16).rev() {
        let nib = ((v >> (shift * 4)) & 0xf) as u8;
        if nib != 0 || started || shift == 0 {
            started = true;
            let c = if nib < 10 { b'0' + nib } else { b'a' + nib - 10 };
            put_str(buf, at, &[c]);
        }
    }
}

/// Appends `s` to `buf` at `*at` (truncating at the end of `buf`).
pub fn put_str(buf: &mut [u8], at: &mut usize, s: &[u8]) {
    for &c in s {
        if let Some(slot) = buf.get_mut(*at) {
            *slot = c;
            *at += 1;
        }
    }
}

/// Formats `criu-rs restorer: <kind> stage S: <msg> (error E, detail D)`.
pub fn format_line(buf: &mut [u8], kind: &[u8], stage: u32, f: Fail) -> usize {
    let mut at = 0;
    put_str(buf, &mut at, b"criu-rs restorer: ");
    put_str(buf, &mut at, kind);
    put_str(buf, &mut at, b" stage ");
    put_hex(buf, &mut at, stage as u64);
    put_str(buf, &mut at, b": ");
    put_str(buf, &mut at, f.msg);
    put_str(buf, &mut at, b" (error ");
    if f.error < 0 {
        put_str(buf, &mut at, b"-");
    }
    put_hex(buf, &mut at, f.error.unsigned_abs());
    put_str(buf, &mut at, b", detail ");
    put_hex(buf, &mut at, f.detail);
    put_str(buf, &mut at, b")\n");
    at
}

fn log_line(fd: i32, kind: &[u8], stage: u32, f: Fail) {
    if fd < 0 {
        return;
    }
    let mut buf = [0u8; 192];
    let n = format_line(&mut buf, kind, stage, f);
    let _ = sys::write(fd, buf.get(..n).unwrap_or(&[]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_line_format() {
        let mut buf = [0u8; 192];
        let n = format_line(&mut buf, b"error", 6, Fail::new(-12, 0x7f00_1000, b"mremap failed"));
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            "criu-rs restorer: error stage 0x6: mremap failed (error -0xc, detail 0x7f001000)\n"
        );
        let mut small = [0u8; 10];
        assert_eq!(format_line(&mut small, b"x", 0, Fail::new(0, 0, b"")), 10);
        let mut at = 0;
        put_hex(&mut buf, &mut at, 0);
        put_hex(&mut buf, &mut at, u64::MAX);
        assert_eq!(&buf[..at], b"0x00xffffffffffffffff");
    }

    fn header(total: u64, base: u64) -> RestoreArgs {
        RestoreArgs {
            magic: RESTORE_MAGIC,
            version: RESTORE_VERSION,
            header_size: size_of::<RestoreArgs>() as u32,
            total_size: total,
            log_fd: -1,
            args: MemRange { start: base, len: 1 << 16 },
            ..Default::default()
        }
    }

    #[test]
    fn header_and_arrays_are_checked() {
        let mut block = vec![0u64; 8192];
        let base = block.as_mut_ptr() as *mut u8;
        let h = header(4096, base as u64);
        // SAFETY: the block is large enough and aligned.
        unsafe { ptr::write(base.cast::<RestoreArgs>(), h) };
        // SAFETY: `base` points to a mapped block of 64 KiB.
        let ctx = unsafe { Ctx::new(base) }.unwrap();
        let hs = size_of::<RestoreArgs>() as u64;
        assert!(ctx.array::<u64>(ArgArray { off: hs, count: 4 }).is_ok());
        assert!(ctx.array::<u64>(ArgArray { off: 8, count: 1 }).is_err(), "inside the header");
        assert!(ctx.array::<u64>(ArgArray { off: hs + 4, count: 1 }).is_err(), "misaligned");
        assert!(ctx.array::<u64>(ArgArray { off: 4000, count: 100 }).is_err(), "past total_size");
        assert!(ctx.array::<u64>(ArgArray { off: hs, count: u64::MAX }).is_err(), "overflow");
        assert_eq!(ctx.array::<u64>(ArgArray { off: 1 << 40, count: 0 }).unwrap().len(), 0);
        for bad in [
            RestoreArgs { magic: 1, ..h },
            RestoreArgs { version: 99, ..h },
            RestoreArgs { header_size: 8, ..h },
            RestoreArgs { total_size: 1 << 20, ..h },
            RestoreArgs { args: MemRange { start: 0x1000, len: 1 << 16 }, ..h },
        ] {
            // SAFETY: as above.
            unsafe { ptr::write(base.cast::<RestoreArgs>(), bad) };
            // SAFETY: as above.
            assert!(unsafe { Ctx::new(base) }.is_err());
        }
    }
}
