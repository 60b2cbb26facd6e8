//! The blob's own `memcpy`, `memmove`, `memset`, `memcmp` and `bcmp`.
//!
//! The compiler emits calls to these for copies, fills and comparisons, and
//! the blob links no libc. They are written with string instructions (and a
//! volatile byte loop for comparisons) so that the optimiser cannot
//! recognise them as the very idioms it would turn back into calls to
//! themselves. In host unit tests they are ordinary (mangled) functions so
//! they do not replace the test binary's libc versions.

use core::arch::asm;

/// Copies `n` bytes from `src` to `dst` (the ranges must not overlap).
///
/// # Safety
/// `src` must be readable and `dst` writable for `n` bytes.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges; `rep movsb` copies rcx bytes
    // forwards (the ABI guarantees DF=0 on entry).
    unsafe {
        asm!(
            "rep movsb",
            inout("rcx") n => _,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags)
        );
    }
    dst
}

/// Copies `n` bytes from `src` to `dst`; the ranges may overlap.
///
/// # Safety
/// `src` must be readable and `dst` writable for `n` bytes.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize).wrapping_sub(src as usize) >= n {
        // dst is below src, or past its end: a forward copy never reads a
        // byte it already overwrote.
        // SAFETY: same contract as ours.
        return unsafe { memcpy(dst, src, n) };
    }
    if n == 0 {
        return dst;
    }
    // SAFETY: dst lies inside (src, src + n): copy backwards, from the last
    // byte, with DF set for the copy and cleared again after it.
    unsafe {
        asm!(
            "std",
            "rep movsb",
            "cld",
            inout("rcx") n => _,
            inout("rdi") dst.add(n - 1) => _,
            inout("rsi") src.add(n - 1) => _,
            options(nostack)
        );
    }
    dst
}

/// Fills `n` bytes at `dst` with the low byte of `c`.
///
/// # Safety
/// `dst` must be writable for `n` bytes.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range; `rep stosb` stores al rcx
    // times forwards.
    unsafe {
        asm!(
            "rep stosb",
            inout("rcx") n => _,
            inout("rdi") dst => _,
            in("al") c as u8,
            options(nostack, preserves_flags)
        );
    }
    dst
}

/// Compares `n` bytes; returns <0, 0 or >0 like C's `memcmp`.
///
/// # Safety
/// Both ranges must be readable for `n` bytes.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n and the caller guarantees n readable bytes on both
        // sides. Volatile reads keep this loop from being turned into a
        // call to memcmp/bcmp.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// Equality-only comparison (LLVM emits it for `==` on byte slices).
///
/// # Safety
/// Both ranges must be readable for `n` bytes.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract.
    unsafe { memcmp(a, b, n) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_set_compare() {
        let src = *b"0123456789abcdef";
        let mut dst = [0u8; 16];
        // SAFETY: both arrays are 16 bytes.
        unsafe { memcpy(dst.as_mut_ptr(), src.as_ptr(), 16) };
        assert_eq!(dst, src);
        // SAFETY: 5 bytes from offset 3 are inside the array.
        unsafe { memset(dst.as_mut_ptr().add(3), 0x1ff, 5) };
        assert_eq!(&dst[..9], b"012\xff\xff\xff\xff\xff8");
        // SAFETY: 16 readable bytes each.
        unsafe {
            assert!(memcmp(dst.as_ptr(), src.as_ptr(), 16) > 0);
            assert!(memcmp(src.as_ptr(), dst.as_ptr(), 16) < 0);
            assert_eq!(memcmp(src.as_ptr(), src.as_ptr(), 16), 0);
            assert_eq!(bcmp(src.as_ptr(), dst.as_ptr(), 3), 0);
        }
    }

    #[test]
    fn memmove_overlapping_both_ways() {
        let mut up = *b"abcdefghij";
        // SAFETY: 8 bytes from offsets 0 and 2 stay inside the array.
        unsafe { memmove(up.as_mut_ptr().add(2), up.as_ptr(), 8) };
        assert_eq!(&up, b"ababcdefgh");
        let mut down = *b"abcdefghij";
        // SAFETY: as above.
        unsafe { memmove(down.as_mut_ptr(), down.as_ptr().add(2), 8) };
        assert_eq!(&down, b"cdefghijij");
        // SAFETY: zero length touches nothing.
        unsafe { memmove(down.as_mut_ptr().add(1), down.as_ptr(), 0) };
        assert_eq!(&down, b"cdefghijij");
    }
}
