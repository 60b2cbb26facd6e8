//! The vDSO-stage check: a dumped vDSO image (a file written by the test,
//! normally the host's own vDSO) premapped as a copy, placed by the blob at
//! its "dumped" address and redirected either to this process's running
//! vDSO (`jump`) or, with no running vDSO (as under qemu-user), to syscall
//! stubs (`stub`); then `clock_gettime` is called through the placed copy.

use super::block::Block;
use super::{call, map_fixed, maps_perms};
use criu_core::abi::{MemRange, VmaArg, VMA_VDSO};
use criu_core::pie::Loaded;
use object::{Object, ObjectSymbol};

const COPY_AT: u64 = 0x2c00_0000_0000;
const FAR_AT: u64 = 0x2d00_0000_0000;

/// Ranges of `[vvar]`+`[vvar_vclock]` (merged) and `[vdso]` in this process.
fn running_vdso() -> (MemRange, MemRange) {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let (mut vvar, mut vdso) = (MemRange::default(), MemRange::default());
    for l in maps.lines() {
        let Some((range, name)) = l.split_once(' ').map(|(r, _)| (r, l.split_whitespace().last().unwrap_or(""))) else { continue };
        let Some((a, b)) = range.split_once('-') else { continue };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else { continue };
        match name {
            "[vdso]" => vdso = MemRange { start: a, len: b - a },
            "[vvar]" | "[vvar_vclock]" => {
                if vvar.len == 0 {
                    vvar = MemRange { start: a, len: b - a };
                } else {
                    vvar.len = b - vvar.start;
                }
            }
            _ => {}
        }
    }
    (vvar, vdso)
}

fn monotonic_ns() -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: the raw syscall writes a timespec.
    unsafe { libc::syscall(libc::SYS_clock_gettime, libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// `mode`: `jump-near` (copy within ±2 GiB of the running vDSO),
/// `jump-far`, or `stub` (no running vDSO).
pub fn run(loaded: &Loaded, image: &str, mode: &str) -> Result<String, String> {
    let jump = mode.starts_with("jump");
    let bytes = std::fs::read(image).map_err(|e| format!("{image}: {e}"))?;
    let elf = object::File::parse(&*bytes).map_err(|e| format!("{image}: {e}"))?;
    let sym = elf
        .dynamic_symbols()
        .find(|s| s.name() == Ok("__vdso_clock_gettime"))
        .ok_or("no __vdso_clock_gettime in the image")?;
    let off = sym.address();
    let len = (bytes.len() as u64).next_multiple_of(4096);

    map_fixed(COPY_AT, len, false)?;
    // SAFETY: the fresh mapping is `len >= bytes.len()` bytes.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), COPY_AT as *mut u8, bytes.len()) };

    let (vvar, vdso) = if jump { running_vdso() } else { (MemRange::default(), MemRange::default()) };
    if jump && vdso.len == 0 {
        return Err("no running [vdso] to jump to".into());
    }
    
    let dumped_at = if mode == "jump-near" {
        let at = (vdso.start - 0x4000_0000) & !0xfff;
        if (0..len).step_by(4096).any(|o| maps_perms(at + o).is_some()) {
            return Err(format!("{at:#x} is taken"));
        }
        at
    } else {
        FAR_AT
    };
    let vma = VmaArg { start: dumped_at, end: dumped_at + len, premap: COPY_AT, prot: 5, kind: VMA_VDSO, fd: -1, ..Default::default() };
    let mut block = Block::new(1 << 14);
    let arr = block.push(&[vma]);
    let scratch = block.area(criu_core::abi::PLAN_SCRATCH_PER_VMA as usize, 8);
    let h = block.header_mut();
    h.vmas = arr;
    h.scratch = scratch;
    h.premap = MemRange { start: COPY_AT, len };
    h.blob = MemRange { start: loaded.base() as u64, len: loaded.len() as u64 };
    h.vdso.running_vdso = vdso;
    h.vdso.running_vvar = vvar;
    // "Parked" where they are: nothing moves the running vDSO here.
    let lo = if vvar.len != 0 { vvar.start.min(vdso.start) } else { vdso.start };
    let hi = (vdso.start + vdso.len).max(vvar.start + vvar.len);
    h.vdso.park = MemRange { start: lo, len: hi - lo };
    call(loaded, "restore_test_vdso", &mut block)?;

    if maps_perms(dumped_at).as_deref() != Some("r-xp") || maps_perms(COPY_AT).is_some() {
        return Err(format!("copy not moved into place: {:?} / {:?}", maps_perms(dumped_at), maps_perms(COPY_AT)));
    }
    type ClockGettime = unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int;
    // SAFETY: the placed copy's clock_gettime (patched into a jump or stub).
    let f: ClockGettime = unsafe { std::mem::transmute((dumped_at + off) as usize) };
    let before = monotonic_ns();
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: calling it with a valid timespec.
    let rc = unsafe { f(libc::CLOCK_MONOTONIC, &mut ts) };
    let after = monotonic_ns();
    let t = ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128;
    if rc != 0 || t < before || t > after {
        return Err(format!("clock_gettime through the placed copy: rc {rc}, {before} <= {t} <= {after} fails"));
    }
    // SAFETY: `f` points at the patched entry; read its first byte.
    let first = unsafe { *((dumped_at + off) as *const u8) };
    let kind = match first {
        0xe9 => "jmp rel32",
        0x48 => "movabs+jmp",
        0xb8 => "syscall stub",
        b => return Err(format!("unexpected first byte {b:#x} at the patched symbol")),
    };
    Ok(format!("vdso: clock_gettime through the placed copy works ({kind})"))
}
