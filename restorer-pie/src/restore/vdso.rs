//! vDSO handling inside the blob: finding the symbols the restored program
//! may call in a vDSO image (ELF dynsym/dynstr reached through PT_DYNAMIC,
//! or the section headers), comparing the dumped and the running symbol
//! tables, and redirecting the dumped copy's symbols to the running vDSO
//! with jumps when they differ.
//!
//! Everything works on a byte slice of the mapped image: every read is
//! bounds-checked, malformed images give [`VdsoError`], never a panic.

use crate::abi::{VDSO_NSYMS, VDSO_SYM_ABSENT, VDSO_SYM_NAMES};

/// Offsets (from the start of the image) and sizes of [`VDSO_SYM_NAMES`];
/// absent ones hold [`VDSO_SYM_ABSENT`] and size 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VdsoSyms {
    pub offsets: [u64; VDSO_NSYMS],
    pub sizes: [u64; VDSO_NSYMS],
}

/// What is wrong with a vDSO image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VdsoError {
    /// Not a little-endian ELF64 x86_64 image.
    NotElf,
    /// A header, table or string lies outside the image.
    OutOfBounds,
    /// No PT_LOAD, or no dynamic symbol table found.
    NoSymtab,
    /// A symbol is too short for the jump written over it (index into
    /// [`VDSO_SYM_NAMES`]).
    TooShort(usize),
}

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const SHT_DYNSYM: u32 = 11;
const DT_NULL: u64 = 0;
const DT_HASH: u64 = 4;
const DT_STRTAB: u64 = 5;
const DT_SYMTAB: u64 = 6;
const DT_STRSZ: u64 = 10;
const EM_X86_64: u16 = 62;
const SYM_SIZE: u64 = 24;

fn rd<const N: usize>(img: &[u8], off: u64) -> Result<[u8; N], VdsoError> {
    let off = usize::try_from(off).map_err(|_| VdsoError::OutOfBounds)?;
    let end = off.checked_add(N).ok_or(VdsoError::OutOfBounds)?;
    let mut b = [0u8; N];
    b.copy_from_slice(img.get(off..end).ok_or(VdsoError::OutOfBounds)?);
    Ok(b)
}

fn u16_at(img: &[u8], off: u64) -> Result<u16, VdsoError> {
    rd::<2>(img, off).map(u16::from_le_bytes)
}

fn u32_at(img: &[u8], off: u64) -> Result<u32, VdsoError> {
    rd::<4>(img, off).map(u32::from_le_bytes)
}

fn u64_at(img: &[u8], off: u64) -> Result<u64, VdsoError> {
    rd::<8>(img, off).map(u64::from_le_bytes)
}

fn add(a: u64, b: u64) -> Result<u64, VdsoError> {
    a.checked_add(b).ok_or(VdsoError::OutOfBounds)
}

fn mul(a: u64, b: u64) -> Result<u64, VdsoError> {
    a.checked_mul(b).ok_or(VdsoError::OutOfBounds)
}

/// The dynamic symbol table: file offsets of symtab/strtab, counts.
struct Dynsym {
    symtab: u64,
    nsyms: u64,
    strtab: u64,
    strsz: u64,
    /// `vaddr - bias` = offset in the image.
    bias: u64,
}

/// The NUL-terminated name at `strtab + name` equals `want`.
fn name_is(img: &[u8], d: &Dynsym, name: u64, want: &[u8]) -> bool {
    let Ok(start) = add(d.strtab, name) else { return false };
    if name >= d.strsz {
        return false;
    }
    let (Ok(s), Ok(len)) = (usize::try_from(start), usize::try_from(want.len() as u64 + 1)) else {
        return false;
    };
    match img.get(s..s.saturating_add(len)) {
        Some(bytes) => bytes.split_last().is_some_and(|(nul, head)| *nul == 0 && head == want),
        None => false,
    }
}

/// Finds the dynamic table through the program headers.
fn from_dynamic(img: &[u8]) -> Result<Dynsym, VdsoError> {
    let bias = load_bias(img)?;
    let ph = find_phdr(img, PT_DYNAMIC)?;
    let (dyn_off, dyn_size) = (u64_at(img, ph + 8)?, u64_at(img, ph + 32)?);
    let (mut symtab, mut strtab, mut strsz, mut hash) = (None, None, None, None);
    for i in 0..dyn_size / 16 {
        let e = add(dyn_off, i * 16)?;
        let tag = u64_at(img, e)?;
        let val = u64_at(img, e + 8)?;
        match tag {
            DT_NULL => break,
            DT_SYMTAB => symtab = Some(val.wrapping_sub(bias)),
            DT_STRTAB => strtab = Some(val.wrapping_sub(bias)),
            DT_STRSZ => strsz = Some(val),
            DT_HASH => hash = Some(val.wrapping_sub(bias)),
            _ => {}
        }
    }
    let (Some(symtab), Some(strtab), Some(strsz), Some(hash)) = (symtab, strtab, strsz, hash) else {
        return Err(VdsoError::NoSymtab);
    };
    // DT_HASH: nbucket, nchain; nchain is the number of symbols.
    let nsyms = u32_at(img, add(hash, 4)?)? as u64;
    Ok(Dynsym { symtab, nsyms, strtab, strsz, bias })
}

/// Finds the dynamic symbol table through the section headers.
fn from_sections(img: &[u8]) -> Result<Dynsym, VdsoError> {
    let shoff = u64_at(img, 40)?;
    let shentsize = u16_at(img, 58)? as u64;
    let shnum = u16_at(img, 60)? as u64;
    if shentsize < 64 {
        return Err(VdsoError::NoSymtab);
    }
    let bias = load_bias(img)?;
    for i in 0..shnum {
        let sh = add(shoff, mul(i, shentsize)?)?;
        if u32_at(img, sh + 4)? != SHT_DYNSYM {
            continue;
        }
        let symtab = u64_at(img, sh + 24)?;
        let size = u64_at(img, sh + 32)?;
        let link = u32_at(img, sh + 40)? as u64;
        let str_sh = add(shoff, mul(link, shentsize)?)?;
        let strtab = u64_at(img, str_sh + 24)?;
        let strsz = u64_at(img, str_sh + 32)?;
        return Ok(Dynsym { symtab, nsyms: size / SYM_SIZE, strtab, strsz, bias });
    }
    Err(VdsoError::NoSymtab)
}

/// Position of the first program header of type `ty`.
fn find_phdr(img: &[u8], ty: u32) -> Result<u64, VdsoError> {
    let phoff = u64_at(img, 32)?;
    let phentsize = u16_at(img, 54)? as u64;
    if phentsize < 56 {
        return Err(VdsoError::NotElf);
    }
    for i in 0..u16_at(img, 56)? as u64 {
        let ph = add(phoff, mul(i, phentsize)?)?;
        if u32_at(img, ph)? == ty {
            return Ok(ph);
        }
    }
    Err(VdsoError::NoSymtab)
}

/// `p_vaddr - p_offset` of the first PT_LOAD: subtracting it from an
/// address gives an offset in the image.
fn load_bias(img: &[u8]) -> Result<u64, VdsoError> {
    let ph = find_phdr(img, PT_LOAD)?;
    Ok(u64_at(img, ph + 16)?.wrapping_sub(u64_at(img, ph + 8)?))
}

/// Looks up [`VDSO_SYM_NAMES`] in the vDSO image `img`.
pub fn vdso_symbols(img: &[u8]) -> Result<VdsoSyms, VdsoError> {
    let ident = rd::<6>(img, 0)?;
    // magic, ELFCLASS64, ELFDATA2LSB
    if ident[..4] != *b"\x7fELF" || ident[4] != 2 || ident[5] != 1 || u16_at(img, 18)? != EM_X86_64 {
        return Err(VdsoError::NotElf);
    }
    let d = from_dynamic(img).or_else(|_| from_sections(img))?;
    let mut out = VdsoSyms { offsets: [VDSO_SYM_ABSENT; VDSO_NSYMS], sizes: [0; VDSO_NSYMS] };
    for i in 0..d.nsyms {
        let s = add(d.symtab, mul(i, SYM_SIZE)?)?;
        let name = u32_at(img, s)? as u64;
        let shndx = u16_at(img, s + 6)?;
        let value = u64_at(img, s + 8)?;
        let size = u64_at(img, s + 16)?;
        if shndx == 0 || name == 0 {
            continue;
        }
        for (k, want) in VDSO_SYM_NAMES.iter().enumerate() {
            if name_is(img, &d, name, want) {
                if let (Some(o), Some(z)) = (out.offsets.get_mut(k), out.sizes.get_mut(k)) {
                    *o = value.wrapping_sub(d.bias);
                    *z = size;
                }
            }
        }
    }
    Ok(out)
}

/// Whether two symbol tables name the same offsets (absent on both
/// sides counts as equal).
pub fn same_symbols(a: &[u64; VDSO_NSYMS], b: &[u64; VDSO_NSYMS]) -> bool {
    a == b
}

/// Length of a `jmp rel32`.
pub const JMP_REL32_LEN: usize = 5;
/// Length of `movabs rax, imm64; jmp rax`.
pub const JMP_ABS_LEN: usize = 12;

/// Writes at the start of `code` (which lives at `at`) a jump to `target`:
/// `jmp rel32` if in range, else `movabs rax, target; jmp rax` (rax is
/// free at a function's entry). Returns the length written, or `None` if
/// `code` is too short.
pub fn write_jump(code: &mut [u8], at: u64, target: u64) -> Option<usize> {
    let rel = (target as i64).wrapping_sub(at.wrapping_add(JMP_REL32_LEN as u64) as i64);
    if let Ok(rel) = i32::try_from(rel) {
        let dst = code.get_mut(..JMP_REL32_LEN)?;
        dst[0] = 0xe9;
        dst[1..].copy_from_slice(&rel.to_le_bytes());
        Some(JMP_REL32_LEN)
    } else {
        let dst = code.get_mut(..JMP_ABS_LEN)?;
        dst[0] = 0x48; // REX.W
        dst[1] = 0xb8; // mov rax, imm64
        dst[2..10].copy_from_slice(&target.to_le_bytes());
        dst[10] = 0xff; // jmp rax
        dst[11] = 0xe0;
        Some(JMP_ABS_LEN)
    }
}

/// Redirects every symbol of the old vDSO copy `old` (mapped at `old_addr`,
/// symbol table `old_syms`) to the same symbol of the running vDSO at
/// `new_addr` (symbol offsets `new_offsets`). Symbols missing on either
/// side are left alone. Returns the number of symbols patched.
pub fn patch_vdso(
    old: &mut [u8],
    old_addr: u64,
    old_syms: &VdsoSyms,
    new_addr: u64,
    new_offsets: &[u64; VDSO_NSYMS],
) -> Result<usize, VdsoError> {
    let mut patched = 0;
    for k in 0..VDSO_NSYMS {
        let (Some(&off), Some(&size), Some(&new_off)) =
            (old_syms.offsets.get(k), old_syms.sizes.get(k), new_offsets.get(k))
        else {
            continue;
        };
        if off == VDSO_SYM_ABSENT || new_off == VDSO_SYM_ABSENT {
            continue;
        }
        let at = old_addr.wrapping_add(off);
        let target = new_addr.wrapping_add(new_off);
        let start = usize::try_from(off).map_err(|_| VdsoError::OutOfBounds)?;
        let code = old.get_mut(start..).ok_or(VdsoError::OutOfBounds)?;
        // A sized symbol must hold the whole jump; unsized ones get the
        // benefit of the doubt.
        let room = if size == 0 { code.len() } else { code.len().min(size as usize) };
        let code = code.get_mut(..room).ok_or(VdsoError::OutOfBounds)?;
        write_jump(code, at, target).ok_or(VdsoError::TooShort(k))?;
        patched += 1;
    }
    Ok(patched)
}

/// What each of [`VDSO_SYM_NAMES`] becomes when no running vDSO exists
/// (e.g. under an emulator): the syscall number it stands for, or `None`
/// for a function that must report "not available" (`__vdso_getrandom`
/// takes different arguments than the syscall; callers fall back on
/// -ENOSYS).
const STUB_SYSCALLS: [Option<u32>; VDSO_NSYMS] = [
    Some(228), // clock_gettime
    Some(96),  // gettimeofday
    Some(201), // time
    Some(309), // getcpu
    Some(229), // clock_getres
    None,      // getrandom
];

/// Length of each stub.
pub const STUB_LEN: usize = 8;

/// Writes at the start of `code` `mov eax, nr; syscall; ret`, or, for
/// `None`, `mov rax, -ENOSYS; ret`.
pub fn write_stub(code: &mut [u8], nr: Option<u32>) -> Option<usize> {
    let dst = code.get_mut(..STUB_LEN)?;
    match nr {
        Some(nr) => {
            dst[0] = 0xb8; // mov eax, imm32
            dst[1..5].copy_from_slice(&nr.to_le_bytes());
            dst[5..8].copy_from_slice(&[0x0f, 0x05, 0xc3]); // syscall; ret
        }
        None => {
            // mov rax, imm32 (sign-extended): -38 = ENOSYS; ret
            dst.copy_from_slice(&[0x48, 0xc7, 0xc0, 0xda, 0xff, 0xff, 0xff, 0xc3]);
        }
    }
    Some(STUB_LEN)
}

/// Replaces every symbol of the old vDSO copy with a syscall stub, for
/// when there is no running vDSO to jump to. Returns the number patched.
pub fn stub_vdso(old: &mut [u8], old_syms: &VdsoSyms) -> Result<usize, VdsoError> {
    let mut patched = 0;
    for (k, nr) in STUB_SYSCALLS.iter().enumerate() {
        let (Some(&off), Some(&size)) = (old_syms.offsets.get(k), old_syms.sizes.get(k)) else { continue };
        if off == VDSO_SYM_ABSENT {
            continue;
        }
        let start = usize::try_from(off).map_err(|_| VdsoError::OutOfBounds)?;
        let code = old.get_mut(start..).ok_or(VdsoError::OutOfBounds)?;
        let room = if size == 0 { code.len() } else { code.len().min(size as usize) };
        write_stub(code.get_mut(..room).ok_or(VdsoError::OutOfBounds)?, *nr).ok_or(VdsoError::TooShort(k))?;
        patched += 1;
    }
    Ok(patched)
}

#[cfg(test)]
mod tests;
