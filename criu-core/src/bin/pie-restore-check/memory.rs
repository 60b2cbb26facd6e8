//! The memory-stage check: generated layouts whose VMAs the blob moves
//! from premapped copies to their final places (packed in order and
//! overlapping the destination, permuted among the destination slots so
//! moves form cycles, or far away), plus a shared file mapping, final
//! protections including PROT_NONE, a madvise bit, and staging cleanup.

use super::block::Block;
use super::{map_fixed, maps_perms};
use criu_core::abi::{MemRange, VmaArg, PLAN_SCRATCH_PER_VMA, VMA_FILE_SHARED, VMA_F_GROWSDOWN, VMA_PREMAPPED};
use criu_core::pie::Loaded;
use rustix::fs::{memfd_create, MemfdFlags};
use std::os::fd::{AsRawFd, OwnedFd};

const PAGE: u64 = 4096;
const REGION: u64 = 0x2000_0000_0000;
const BOUNCE: u64 = 0x2800_0000_0000;
const PROT_NONE: u32 = 0;
const PROT_R: u32 = 1;
const PROT_RW: u32 = 3;
const MAP_SHARED: u32 = 1;
const MAP_PRIVATE: u32 = 2;
const MADV_DONTFORK: u32 = 10;
const ROUNDS: u64 = 12;

/// xorshift64: deterministic layouts from the seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn pattern(round: u64, id: usize, word: u64) -> u64 {
    round << 48 | (id as u64) << 32 | word
}

fn fill(addr: u64, len: u64, round: u64, id: usize) {
    for w in 0..len / 8 {
        // SAFETY: [addr, addr + len) is our read-write mapping.
        unsafe { ((addr + w * 8) as *mut u64).write(pattern(round, id, w)) };
    }
}

fn check_fill(addr: u64, len: u64, round: u64, id: usize) -> Result<(), String> {
    for w in 0..len / 8 {
        // SAFETY: the VMA is mapped readable at this point.
        let got = unsafe { ((addr + w * 8) as *const u64).read() };
        if got != pattern(round, id, w) {
            return Err(format!("round {round}: VMA {id} word {w} at {:#x} is {got:#x}", addr + w * 8));
        }
    }
    Ok(())
}

fn perms(prot: u32, shared: bool) -> String {
    let r = if prot & 1 != 0 { 'r' } else { '-' };
    let w = if prot & 2 != 0 { 'w' } else { '-' };
    let x = if prot & 4 != 0 { 'x' } else { '-' };
    format!("{r}{w}{x}{}", if shared { 's' } else { 'p' })
}

/// The VmFlags line of the smaps entry starting at `start`.
fn vm_flags(start: u64) -> Option<String> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let head = format!("{start:x}-");
    let mut inside = false;
    for line in smaps.lines() {
        if line.starts_with(&head) {
            inside = true;
        } else if inside && line.starts_with("VmFlags:") {
            return Some(line.to_owned());
        }
    }
    None
}

pub fn run(loaded: &Loaded, seed: u64, smaps: bool) -> Result<String, String> {
    let mut rng = Rng(seed | 1);
    let mut parked = 0;
    for round in 0..ROUNDS {
        parked += one_layout(loaded, &mut rng, round, smaps)?;
    }
    Ok(format!("memory: {ROUNDS} layouts (seed {seed}, {parked} used the bounce area)"))
}

/// Builds, runs and checks one layout; returns 1 if a move needed the
/// bounce area (some source overlapped a destination).
fn one_layout(loaded: &Loaded, rng: &mut Rng, round: u64, smaps: bool) -> Result<u64, String> {
    let mode = round % 3;
    let n = 3 + rng.below(10) as usize;
    let base = REGION + round * 0x1_0000_0000;
    // Final layout; permuted layouts use one size so slots can be swapped.
    let mut vmas = Vec::new();
    let mut addr = base;
    for i in 0..n {
        addr += rng.below(3) * PAGE;
        let len = if mode == 1 { 2 * PAGE } else { (1 + rng.below(5)) * PAGE };
        let prot = match i % 4 {
            1 => PROT_R,
            3 => PROT_NONE,
            _ => PROT_RW,
        };
        vmas.push(VmaArg { start: addr, end: addr + len, prot, flags: MAP_PRIVATE, kind: VMA_PREMAPPED, fd: -1, ..Default::default() });
        addr += len;
    }
    let span = addr - base;
    // One shared file VMA (not in the permuted mode) and one DONTFORK.
    let file_vma = (mode != 1).then(|| rng.below(n as u64) as usize);
    let memfd: Option<OwnedFd> = match file_vma {
        Some(i) => {
            let fd = memfd_create("pie-restore-check", MemfdFlags::CLOEXEC).map_err(|e| e.to_string())?;
            let v = &mut vmas[i];
            let len = v.end - v.start;
            let bytes: Vec<u8> = (0..len / 8 + 2 * PAGE / 8).flat_map(|w| pattern(round, 99, w).to_le_bytes()).collect();
            rustix::io::write(&fd, &bytes).map_err(|e| e.to_string())?;
            *v = VmaArg { kind: VMA_FILE_SHARED, flags: MAP_SHARED, prot: PROT_RW, fd: fd.as_raw_fd(), pgoff: PAGE, ..*v };
            Some(fd)
        }
        None => None,
    };
    let dontfork = rng.below(n as u64) as usize;
    vmas[dontfork].madv = 1 << MADV_DONTFORK;
    // One grows-down (stack-like) VMA: premapped with MAP_GROWSDOWN (not
    // under qemu-user 7.2, whose mmap refuses MAP_GROWSDOWN here; `smaps`
    // is false exactly there).
    let growsdown = (0..n).find(|&i| smaps && vmas[i].kind == VMA_PREMAPPED && i != dontfork);
    if let Some(i) = growsdown {
        vmas[i].vflags = VMA_F_GROWSDOWN;
        vmas[i].flags |= libc::MAP_GROWSDOWN as u32;
    }

    // Premapped copies.
    let premapped: Vec<usize> = (0..n).filter(|&i| vmas[i].kind == VMA_PREMAPPED).collect();
    match mode {
        0 | 2 => {
            let shift = if mode == 0 { rng.below(2 * span / PAGE + 1) * PAGE } else { 0x4000_0000 + span };
            let mut p = base - span + shift;
            for &i in &premapped {
                vmas[i].premap = p;
                p += vmas[i].end - vmas[i].start;
            }
        }
        _ => {
            let mut slots: Vec<u64> = premapped.iter().map(|&i| vmas[i].start).collect();
            for k in (1..slots.len()).rev() {
                slots.swap(k, rng.below(k as u64 + 1) as usize);
            }
            for (&i, s) in premapped.iter().zip(slots) {
                vmas[i].premap = s;
            }
        }
    }
    let lo = premapped.iter().map(|&i| vmas[i].premap).min().unwrap_or(base);
    let hi = premapped.iter().map(|&i| vmas[i].premap + vmas[i].end - vmas[i].start).max().unwrap_or(base);
    let needs_bounce = premapped.iter().any(|&i| {
        let v = &vmas[i];
        let len = v.end - v.start;
        v.premap != v.start && vmas.iter().any(|o| o.start < v.premap + len && v.premap < o.end)
    });
    for &i in &premapped {
        let v = &vmas[i];
        map_fixed(v.premap, v.end - v.start, v.vflags & VMA_F_GROWSDOWN != 0)?;
        fill(v.premap, v.end - v.start, round, i);
    }

    let mut block = Block::new(1 << 16);
    let arr = block.push(&vmas);
    let scratch = block.area(vmas.len() * PLAN_SCRATCH_PER_VMA as usize, 8);
    let h = block.header_mut();
    h.vmas = arr;
    h.scratch = scratch;
    h.premap = MemRange { start: lo, len: hi - lo };
    h.bounce = MemRange { start: BOUNCE + round * 0x1000_0000, len: span };
    h.blob = MemRange { start: loaded.base() as u64, len: loaded.len() as u64 };
    super::call(loaded, "restore_test_memory", &mut block).map_err(|e| format!("round {round} (mode {mode}): {e}"))?;

    for (i, v) in vmas.iter().enumerate() {
        let len = v.end - v.start;
        let want = perms(v.prot, v.kind == VMA_FILE_SHARED);
        for a in [v.start, v.end - 1] {
            let got = maps_perms(a);
            if got.as_deref() != Some(want.as_str()) {
                return Err(format!("round {round}: VMA {i} at {a:#x}: maps says {got:?}, want {want}"));
            }
        }
        if v.kind == VMA_FILE_SHARED {
            for w in 0..len / 8 {
                // SAFETY: mapped read-write (checked above).
                let got = unsafe { ((v.start + w * 8) as *const u64).read() };
                if got != pattern(round, 99, w + PAGE / 8) {
                    return Err(format!("round {round}: file VMA word {w} is {got:#x}"));
                }
            }
            // SAFETY: as above; the mapping is shared with the memfd.
            unsafe { (v.start as *mut u64).write(0xfeed) };
            let mut back = [0u8; 8];
            rustix::io::pread(memfd.as_ref().unwrap(), &mut back, PAGE).map_err(|e| e.to_string())?;
            if u64::from_le_bytes(back) != 0xfeed {
                return Err(format!("round {round}: file VMA is not shared with its file"));
            }
        } else {
            if v.prot & PROT_R == 0 {
                // SAFETY: our own restored VMA, made readable to check it.
                unsafe { libc::mprotect(v.start as *mut _, len as usize, libc::PROT_READ) };
            }
            check_fill(v.start, len, round, i)?;
        }
        if smaps && v.vflags & VMA_F_GROWSDOWN != 0 {
            let flags = vm_flags(v.start).unwrap_or_default();
            if !flags.split_whitespace().any(|f| f == "gd") {
                return Err(format!("round {round}: VMA {i} lost its grows-down (gd) flag: {flags}"));
            }
        }
        if smaps && v.madv != 0 {
            let flags = vm_flags(v.start).unwrap_or_default();
            if !flags.split_whitespace().any(|f| f == "dc") {
                return Err(format!("round {round}: VMA {i} has no DONTFORK (dc) flag: {flags}"));
            }
        }
    }
    // Staging leftovers are gone: every premap page not in a final VMA.
    for &i in &premapped {
        let p = vmas[i].premap;
        if !vmas.iter().any(|o| o.start <= p && p < o.end) && maps_perms(p).is_some() {
            return Err(format!("round {round}: premap copy at {p:#x} still mapped"));
        }
    }
    for v in &vmas {
        // SAFETY: unmapping this round's own VMAs.
        unsafe { libc::munmap(v.start as *mut _, (v.end - v.start) as usize) };
    }
    Ok(u64::from(needs_bounce))
}
