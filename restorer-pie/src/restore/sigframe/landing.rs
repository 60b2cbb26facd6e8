// Landing code for tests of `rt_sigreturn` into a built frame, shared
// (through `include!`) by the sigframe unit tests and criu-core's
// pie-restore-check program.
//
// `sigreturn_landing!(name, store, check)` defines global symbol `name`:
// it saves rflags, the GPRs and the original rsp on the restored stack,
// then the 16 vector registers (each stored by the `store` instruction
// template over `\i`, 32 bytes apart), and calls `check(saved)` where
// `saved` points at [vectors: 512 bytes][rsp, r15..r8, rbp, rdi, rsi, rdx,
// rcx, rbx, rax, rflags: 17 words].
macro_rules! sigreturn_landing {
    ($name:literal, $store:literal, $check:path) => {
        ::core::arch::global_asm!(
            concat!(".globl ", $name, "\n", $name, ":"),
            "pushfq",
            ".irp r,rax,rbx,rcx,rdx,rsi,rdi,rbp,r8,r9,r10,r11,r12,r13,r14,r15",
            "push \\r",
            ".endr",
            "lea rax, [rsp + 128]",
            "push rax",
            "sub rsp, 512",
            ".irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15",
            $store,
            ".endr",
            "mov rdi, rsp",
            "and rsp, -16",
            "call {check}",
            "ud2",
            check = sym $check,
        );
    };
}
