//! Switching to the blob's stack and entering it (never returns).

/// Sets `rsp` to `stack_top` (aligned to 16 minus 8, as right after a
/// `call`), `rdi` to `args`, and jumps to `entry`.
///
/// # Safety
/// `entry` must be the blob's relocated `restore_entry`, `args` its argument
/// block and `stack_top` the top of a writable stack inside the args mapping.
pub unsafe fn jump(entry: u64, args: u64, stack_top: u64) -> ! {
    let rsp = (stack_top & !15) - 8;
    // SAFETY: per the caller's contract; the blob never returns.
    unsafe {
        std::arch::asm!(
            "mov rsp, {rsp}",
            "xor ebp, ebp",
            "jmp {entry}",
            rsp = in(reg) rsp,
            entry = in(reg) entry,
            in("rdi") args,
            options(noreturn)
        )
    }
}
