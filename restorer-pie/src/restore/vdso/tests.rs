//! Tests of the vDSO code against the host's real vDSO: symbol lookup
//! (checked by calling the symbols found), a copy whose symbols are
//! redirected with near and far jumps, changed tables, and malformed images.

use super::*;
use syscalls::{syscall, Sysno};

const CLOCK_MONOTONIC: usize = 1;
const PROT_RWX: usize = 7;
const PROT_RX: usize = 5;
const MAP_PRIVATE_ANON: usize = 0x22;
const MAP_FIXED_NOREPLACE: usize = 0x100000;

/// The running process's `[vdso]` as (address, bytes).
fn host_vdso() -> (u64, &'static [u8]) {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps.lines().find(|l| l.ends_with("[vdso]")).expect("no [vdso] in /proc/self/maps");
    let range = line.split_whitespace().next().unwrap();
    let (a, b) = range.split_once('-').unwrap();
    let a = u64::from_str_radix(a, 16).unwrap();
    let b = u64::from_str_radix(b, 16).unwrap();
    // SAFETY: the vDSO stays mapped, readable, for the life of the process.
    (a, unsafe { std::slice::from_raw_parts(a as *const u8, (b - a) as usize) })
}

type ClockGettime = unsafe extern "C" fn(usize, *mut [i64; 2]) -> i32;

fn idx(name: &str) -> usize {
    VDSO_SYM_NAMES.iter().position(|n| *n == name.as_bytes()).unwrap()
}

fn monotonic_ns_syscall() -> i128 {
    let mut ts = [0i64; 2];
    // SAFETY: clock_gettime writes a timespec into `ts`.
    unsafe { syscall!(Sysno::clock_gettime, CLOCK_MONOTONIC, ts.as_mut_ptr()) }.unwrap();
    ts[0] as i128 * 1_000_000_000 + ts[1] as i128
}

/// Calls `clock_gettime(CLOCK_MONOTONIC)` at `addr` and checks the result
/// lies between two syscall readings.
fn check_clock_gettime_at(addr: u64) {
    // SAFETY: `addr` is a clock_gettime implementation (the vDSO's, or a
    // jump to it).
    let f: ClockGettime = unsafe { std::mem::transmute(addr as usize) };
    let before = monotonic_ns_syscall();
    let mut ts = [0i64; 2];
    // SAFETY: calling it with a valid timespec pointer.
    let r = unsafe { f(CLOCK_MONOTONIC, &mut ts) };
    let after = monotonic_ns_syscall();
    let got = ts[0] as i128 * 1_000_000_000 + ts[1] as i128;
    assert_eq!(r, 0);
    assert!(before <= got && got <= after, "{before} <= {got} <= {after}");
}

#[test]
fn finds_host_symbols_and_they_work() {
    let (addr, img) = host_vdso();
    let syms = vdso_symbols(img).unwrap();
    for name in ["__vdso_clock_gettime", "__vdso_gettimeofday", "__vdso_time", "__vdso_getcpu", "__vdso_clock_getres"] {
        let off = syms.offsets[idx(name)];
        assert!(off != VDSO_SYM_ABSENT && off < img.len() as u64, "{name}: {off:#x}");
        assert!(syms.sizes[idx(name)] > 0, "{name} has no size");
    }
    check_clock_gettime_at(addr + syms.offsets[idx("__vdso_clock_gettime")]);
    // Same answer through the section headers.
    let d = from_sections(img).unwrap();
    let via_dyn = from_dynamic(img).unwrap();
    assert_eq!((d.symtab, d.strtab, d.nsyms), (via_dyn.symtab, via_dyn.strtab, via_dyn.nsyms));
}

/// An anonymous RWX mapping holding a copy of `img`, at `hint` if free.
fn map_copy(img: &[u8], hint: u64) -> Option<(u64, &'static mut [u8])> {
    // SAFETY: a fresh anonymous mapping, not replacing anything.
    let a = unsafe { syscall!(Sysno::mmap, hint, img.len(), PROT_RWX, MAP_PRIVATE_ANON | MAP_FIXED_NOREPLACE, -1isize, 0) }.ok()?;
    // SAFETY: we own this new mapping of img.len() bytes.
    let copy = unsafe { std::slice::from_raw_parts_mut(a as *mut u8, img.len()) };
    copy.copy_from_slice(img);
    Some((a as u64, copy))
}

/// A free page-aligned address around `near + delta` (tries a few).
fn find_copy(img: &[u8], near: u64, delta: i64) -> (u64, &'static mut [u8]) {
    for k in 0..64i64 {
        let hint = (near as i64 + delta + k * 0x10_0000) as u64 & !0xfff;
        if let Some(c) = map_copy(img, hint) {
            if c.0 == hint {
                return c;
            }
        }
    }
    panic!("no free spot near {near:#x}{delta:+#x}");
}

fn redirected_copy_works(delta: i64, expect_len: usize) {
    let (addr, img) = host_vdso();
    let running = vdso_symbols(img).unwrap();
    let (caddr, copy) = find_copy(img, addr, delta);
    let old = vdso_symbols(copy).unwrap();
    assert!(same_symbols(&old.offsets, &running.offsets));
    let n = patch_vdso(copy, caddr, &old, addr, &running.offsets).unwrap();
    assert!(n >= 5, "patched {n}");
    let off = old.offsets[idx("__vdso_clock_gettime")] as usize;
    assert_eq!(copy[off], if expect_len == JMP_REL32_LEN { 0xe9 } else { 0x48 });
    // SAFETY: make the copy executable only.
    unsafe { syscall!(Sysno::mprotect, caddr, copy.len(), PROT_RX) }.unwrap();
    // Unpatched, the copy would read vvar data relative to its own place
    // (nothing there): only a working jump gives the right time.
    check_clock_gettime_at(caddr + off as u64);
    // SAFETY: unmapping our copy.
    unsafe { syscall!(Sysno::munmap, caddr, copy.len()) }.unwrap();
}

#[test]
fn redirected_copy_near_uses_rel32() {
    redirected_copy_works(-0x4000_0000, JMP_REL32_LEN);
}

#[test]
fn redirected_copy_far_uses_movabs() {
    redirected_copy_works(-0x20_0000_0000, JMP_ABS_LEN);
}

#[test]
fn changed_symbol_table_is_noticed() {
    let (_, img) = host_vdso();
    let mut copy = img.to_vec();
    let d = from_dynamic(&copy).unwrap();
    let orig = vdso_symbols(&copy).unwrap();
    // Shift every symbol's value by 16 in the copy.
    for i in 0..d.nsyms {
        let v = (d.symtab + i * 24 + 8) as usize;
        let val = u64::from_le_bytes(copy[v..v + 8].try_into().unwrap());
        if val != 0 {
            copy[v..v + 8].copy_from_slice(&(val + 16).to_le_bytes());
        }
    }
    let moved = vdso_symbols(&copy).unwrap();
    assert!(!same_symbols(&orig.offsets, &moved.offsets));
    assert_eq!(moved.offsets[0], orig.offsets[0] + 16);
}

#[test]
fn jumps_encode_as_expected() {
    let mut code = [0u8; 16];
    assert_eq!(write_jump(&mut code, 0x1000, 0x2000), Some(5));
    assert_eq!(code[..5], [0xe9, 0xfb, 0x0f, 0, 0]);
    assert_eq!(write_jump(&mut code, 0x2000, 0x1000), Some(5));
    assert_eq!(i32::from_le_bytes(code[1..5].try_into().unwrap()), 0x1000 - 0x2005);
    assert_eq!(write_jump(&mut code, 0x1000, 0x7fff_0000_1234), Some(12));
    assert_eq!(code[..12], [0x48, 0xb8, 0x34, 0x12, 0, 0, 0xff, 0x7f, 0, 0, 0xff, 0xe0]);
    assert_eq!(write_jump(&mut code[..11], 0x1000, 0x7fff_0000_1234), None);
    assert_eq!(write_jump(&mut code[..4], 0x1000, 0x2000), None);
    // A sized symbol too small for the jump is refused.
    let syms = VdsoSyms { offsets: [0, VDSO_SYM_ABSENT, VDSO_SYM_ABSENT, VDSO_SYM_ABSENT, VDSO_SYM_ABSENT, VDSO_SYM_ABSENT], sizes: [4, 0, 0, 0, 0, 0] };
    let mut img = [0u8; 64];
    assert_eq!(patch_vdso(&mut img, 0x1000, &syms, 0x2000, &[0; VDSO_NSYMS]), Err(VdsoError::TooShort(0)));
}

#[test]
fn malformed_images_are_errors_not_panics() {
    let (_, img) = host_vdso();
    assert_eq!(vdso_symbols(&[]), Err(VdsoError::OutOfBounds));
    assert_eq!(vdso_symbols(&[0u8; 64]), Err(VdsoError::NotElf));
    for cut in [6, 20, 63, 64, 100, 1000, img.len() / 2] {
        let _ = vdso_symbols(&img[..cut.min(img.len())]);
    }
    // Deterministic byte smashing over headers and tables.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut copy = img.to_vec();
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        copy.copy_from_slice(img);
        for k in 0..4 {
            let pos = ((x >> (k * 16)) as usize) % copy.len().min(if k % 2 == 0 { 512 } else { usize::MAX });
            copy[pos] = (x >> (k * 8 + 3)) as u8;
        }
        let _ = vdso_symbols(&copy[..copy.len() - (x as usize % 64)]);
    }
}

#[test]
fn stubbed_copy_works_without_a_running_vdso() {
    let (addr, img) = host_vdso();
    let (caddr, copy) = find_copy(img, addr, -0x20_0000_0000);
    let old = vdso_symbols(copy).unwrap();
    assert!(stub_vdso(copy, &old).unwrap() >= 5);
    // SAFETY: make the copy executable only.
    unsafe { syscall!(Sysno::mprotect, caddr, copy.len(), PROT_RX) }.unwrap();
    check_clock_gettime_at(caddr + old.offsets[idx("__vdso_clock_gettime")]);
    if old.offsets[idx("__vdso_getrandom")] != VDSO_SYM_ABSENT {
        type GetRandom = unsafe extern "C" fn(*mut u8, usize, u32, *mut u8, usize) -> isize;
        // SAFETY: the stub ignores its arguments and returns -ENOSYS.
        let f: GetRandom = unsafe { std::mem::transmute((caddr + old.offsets[idx("__vdso_getrandom")]) as usize) };
        // SAFETY: as above.
        assert_eq!(unsafe { f(std::ptr::null_mut(), 0, 0, std::ptr::null_mut(), 0) }, -38);
    }
    // SAFETY: unmapping our copy.
    unsafe { syscall!(Sysno::munmap, caddr, copy.len()) }.unwrap();
}
