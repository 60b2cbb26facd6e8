//! The restorer blob: a freestanding static PIE, packaged by
//! `linker::pack` and loaded by criu-core's `pie` module.
//!
//! This file holds only the panic handler and the exported entry points;
//! the logic is in the library (`restorer_pie`).
//!
//! Adding an entry: write `unsafe extern "C" fn NAME(args: *mut u8) -> i64`
//! (or `-> !`) here, turning `args` into the `#[repr(C)]` struct from
//! `abi.rs`, and add `Entry::new("NAME", NAME)` (or `Entry::noreturn`) to
//! [`ENTRIES`]. The packager picks it up by name; callers use
//! `Loaded::call("NAME", args)` or the offset from `Package::entry`.
#![no_std]
#![no_main]

use restorer_pie::abi::{SelftestRelocArgs, SelftestSyscallArgs, SelftestWriteArgs};
use restorer_pie::entry::Entry;
use restorer_pie::selftest;

/// EINVAL as an entry status: a null argument block.
const EINVAL: i64 = -22;

/// The exported entry points, read by the packager from `.entries`.
#[used]
#[link_section = ".entries"]
static ENTRIES: [Entry; 7] = [
    Entry::new("pie_selftest_reloc", pie_selftest_reloc),
    Entry::new("pie_selftest_syscall", pie_selftest_syscall),
    Entry::new("pie_selftest_write", pie_selftest_write),
    Entry::noreturn("restore_entry", restore_entry),
    Entry::new("restore_test_memory", restore_test_memory),
    Entry::new("restore_test_vdso", restore_test_vdso),
    Entry::new("restore_test_sigreturn", restore_test_sigreturn),
];

/// Entry `restore_test_memory`: the memory stages on a `RestoreArgs` block.
///
/// # Safety
/// See `restorer_pie::restore::testentry::memory`.
unsafe extern "C" fn restore_test_memory(args: *mut u8) -> i64 {
    // SAFETY: forwarded promise.
    unsafe { restorer_pie::restore::testentry::memory(args) }
}

/// Entry `restore_test_vdso`: the vDSO stage on a `RestoreArgs` block.
///
/// # Safety
/// See `restorer_pie::restore::testentry::vdso`.
unsafe extern "C" fn restore_test_vdso(args: *mut u8) -> i64 {
    // SAFETY: forwarded promise.
    unsafe { restorer_pie::restore::testentry::vdso(args) }
}

/// Entry `restore_test_sigreturn`: sigframe + rt_sigreturn from thread 0
/// of a `RestoreArgs` block; returns only on failure.
///
/// # Safety
/// See `restorer_pie::restore::testentry::sigreturn`.
unsafe extern "C" fn restore_test_sigreturn(args: *mut u8) -> i64 {
    // SAFETY: forwarded promise.
    unsafe { restorer_pie::restore::testentry::sigreturn(args) }
}

/// Entry `restore_entry`: restores the task from the argument block
/// (`abi::RestoreArgs`) at `args` and ends in `rt_sigreturn` (or
/// `exit_group(1)`). Entered on thread 0's blob stack.
///
/// # Safety
/// See `restorer_pie::restore::run::restore`.
unsafe extern "C" fn restore_entry(args: *mut u8) -> ! {
    // SAFETY: the host set up the block and the stack as documented.
    unsafe { restorer_pie::restore::run::restore(args) }
}

/// Entry `pie_selftest_reloc`; `args` points to a [`SelftestRelocArgs`].
///
/// # Safety
/// `args` must be null or point to a valid, aligned, writable argument block.
unsafe extern "C" fn pie_selftest_reloc(args: *mut u8) -> i64 {
    // SAFETY: the caller passes null or a valid SelftestRelocArgs.
    match unsafe { args.cast::<SelftestRelocArgs>().as_mut() } {
        Some(a) => selftest::reloc(a),
        None => EINVAL,
    }
}

/// Entry `pie_selftest_syscall`; `args` points to a [`SelftestSyscallArgs`].
///
/// # Safety
/// As for [`pie_selftest_reloc`].
unsafe extern "C" fn pie_selftest_syscall(args: *mut u8) -> i64 {
    // SAFETY: the caller passes null or a valid SelftestSyscallArgs.
    match unsafe { args.cast::<SelftestSyscallArgs>().as_mut() } {
        Some(a) => selftest::syscall(a),
        None => EINVAL,
    }
}

/// Entry `pie_selftest_write`; `args` points to a [`SelftestWriteArgs`].
///
/// # Safety
/// As for [`pie_selftest_reloc`].
unsafe extern "C" fn pie_selftest_write(args: *mut u8) -> i64 {
    // SAFETY: the caller passes null or a valid SelftestWriteArgs.
    match unsafe { args.cast::<SelftestWriteArgs>().as_mut() } {
        Some(a) => selftest::write(a),
        None => EINVAL,
    }
}

/// The precompiled `core` refers to the unwinding personality routine from
/// its (discarded) unwind tables; the blob never unwinds, so this is never
/// called.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

/// Panics are unreachable by the blob's rules; should one happen anyway,
/// trap (SIGILL) rather than run on with broken state.
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // SAFETY: ud2 raises #UD and never returns.
    unsafe { core::arch::asm!("ud2", options(noreturn, nostack)) }
}
