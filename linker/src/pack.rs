//! ELF → [`Package`]: flattens the linked blob and collects its tables.
//!
//! The input must be what `restorer.ld` produces: an x86_64 ELF64 `ET_DYN`
//! (static PIE) whose only dynamic relocations are `R_X86_64_RELATIVE`,
//! with no program interpreter, no TLS, no undefined symbols, no
//! writable+executable segment, no linked-in panic or `core::fmt` code
//! (checked by symbol name), and a non-empty `.entries` section (see
//! `restorer_pie::entry`). Anything else is refused with a [`PackError`]
//! that names the problem, because the loader can do nothing but add the
//! load base to 8-byte slots.

use crate::package::{decode_name, EntryPoint, Package, PackageError, Prot, Segment, ENTRY_NAME_LEN, PAGE_SIZE};
use object::elf;
use object::read::elf::{FileHeader, ProgramHeader, Rela, SectionHeader, SectionTable, Sym};
use object::{LittleEndian as LE, SectionIndex};
use std::collections::BTreeMap;

type Header = elf::FileHeader64<LE>;

/// Why an ELF file cannot become a restorer package.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("not a readable little-endian ELF64 file: {0}")]
    Parse(#[from] object::Error),
    #[error("ELF machine is {0}, expected EM_X86_64 (62)")]
    WrongMachine(u16),
    #[error("ELF type is {0}, expected ET_DYN: the blob must be linked as a static PIE (-static-pie)")]
    NotDyn(&'static str),
    #[error("the ELF has a PT_INTERP segment (it asks for a dynamic loader): link with --no-dynamic-linker")]
    Interp,
    #[error("the ELF uses thread-local storage ({0}): the blob has no TLS")]
    Tls(String),
    #[error("PT_LOAD segment at {vaddr:#x} is both writable and executable")]
    WritableExecutable { vaddr: u64 },
    #[error("PT_LOAD segment at {vaddr:#x} is not page aligned (offset {offset:#x}, align {align:#x})")]
    MisalignedSegment { vaddr: u64, offset: u64, align: u64 },
    #[error("PT_LOAD segments at {first:#x} and {second:#x} share a page with different protections")]
    SegmentsSharePage { first: u64, second: u64 },
    #[error("PT_LOAD segment at {vaddr:#x} refers to bytes past the end of the file")]
    SegmentOutsideFile { vaddr: u64 },
    #[error("the ELF has no PT_LOAD segment")]
    NoLoadSegments,
    #[error(
        "relocation {kind} at offset {offset:#x}{} is not R_X86_64_RELATIVE: \
         the loader can only add the load base",
        symbol.as_ref().map(|s| format!(" against symbol `{s}`")).unwrap_or_default()
    )]
    BadRelocation { kind: String, offset: u64, symbol: Option<String> },
    #[error("relocation section `{section}` has type {kind}: only SHT_RELA is supported")]
    UnsupportedRelocSection { section: String, kind: &'static str },
    #[error("R_X86_64_RELATIVE at {offset:#x} lies outside the file-backed image or is misaligned")]
    RelocationOutsideImage { offset: u64 },
    #[error("undefined symbol `{0}`: the blob must not refer to anything outside itself")]
    UndefinedSymbol(String),
    #[error(
        "the blob links `{symbol}`: {reason} (blob code must not index unchecked, unwrap, \
         overflow-check or format; find the caller with `nm`/`objdump -d` on the ELF)"
    )]
    ForbiddenSymbol { symbol: String, reason: &'static str },
    #[error("no entry points: the `.entries` section is missing or empty")]
    NoEntries,
    #[error("bad `.entries` section: {0}")]
    BadEntries(String),
    #[error("the packed result is invalid: {0}")]
    Package(#[from] PackageError),
}

/// Name of an x86_64 relocation type, for error messages.
pub fn reloc_type_name(r_type: u32) -> String {
    let name = match r_type {
        elf::R_X86_64_NONE => "R_X86_64_NONE",
        elf::R_X86_64_64 => "R_X86_64_64",
        elf::R_X86_64_PC32 => "R_X86_64_PC32",
        elf::R_X86_64_GOT32 => "R_X86_64_GOT32",
        elf::R_X86_64_PLT32 => "R_X86_64_PLT32",
        elf::R_X86_64_COPY => "R_X86_64_COPY",
        elf::R_X86_64_GLOB_DAT => "R_X86_64_GLOB_DAT",
        elf::R_X86_64_JUMP_SLOT => "R_X86_64_JUMP_SLOT",
        elf::R_X86_64_RELATIVE => "R_X86_64_RELATIVE",
        elf::R_X86_64_GOTPCREL => "R_X86_64_GOTPCREL",
        elf::R_X86_64_32 => "R_X86_64_32",
        elf::R_X86_64_32S => "R_X86_64_32S",
        elf::R_X86_64_DTPMOD64 => "R_X86_64_DTPMOD64",
        elf::R_X86_64_DTPOFF64 => "R_X86_64_DTPOFF64",
        elf::R_X86_64_TPOFF64 => "R_X86_64_TPOFF64",
        elf::R_X86_64_IRELATIVE => "R_X86_64_IRELATIVE",
        other => return format!("type {other}"),
    };
    name.to_string()
}

fn elf_type_name(e_type: u16) -> &'static str {
    match e_type {
        elf::ET_NONE => "ET_NONE",
        elf::ET_REL => "ET_REL (an object file, not linked)",
        elf::ET_EXEC => "ET_EXEC (a fixed-address executable)",
        elf::ET_CORE => "ET_CORE",
        _ => "unknown",
    }
}

/// Reads a file and packs it.
pub fn pack_file(path: &std::path::Path) -> Result<Package, crate::build::BuildError> {
    let data = std::fs::read(path).map_err(|source| crate::build::BuildError::Read { path: path.to_owned(), source })?;
    pack(&data).map_err(|source| crate::build::BuildError::Pack { path: path.to_owned(), source })
}

/// Packs a linked blob ELF image (see the module doc for what is accepted).
pub fn pack(data: &[u8]) -> Result<Package, PackError> {
    let header = Header::parse(data)?;
    let endian = header.endian()?;
    if header.e_machine(endian) != elf::EM_X86_64 {
        return Err(PackError::WrongMachine(header.e_machine(endian)));
    }
    let e_type = header.e_type(endian);
    if e_type != elf::ET_DYN {
        return Err(PackError::NotDyn(elf_type_name(e_type)));
    }
    let phdrs = header.program_headers(endian, data)?;
    let sections = header.sections(endian, data)?;

    // Whole-file properties.
    for ph in phdrs {
        match ph.p_type(endian) {
            elf::PT_INTERP => return Err(PackError::Interp),
            elf::PT_TLS => return Err(PackError::Tls("PT_TLS segment".into())),
            _ => {}
        }
    }
    for s in sections.iter() {
        if s.sh_flags(endian) & u64::from(elf::SHF_TLS) != 0 {
            return Err(PackError::Tls(format!("section `{}`", section_name(&sections, s))));
        }
    }

    // Loadable segments → flattened image and segment table.
    let loads: Vec<_> = phdrs.iter().filter(|ph| ph.p_type(endian) == elf::PT_LOAD).collect();
    let base = loads.iter().map(|ph| ph.p_vaddr(endian)).min().ok_or(PackError::NoLoadSegments)? & !(PAGE_SIZE - 1);
    let mut image = Vec::new();
    let mut mem_end = 0u64;
    let mut segments: Vec<Segment> = Vec::new();
    for ph in &loads {
        let (vaddr, offset, align) = (ph.p_vaddr(endian), ph.p_offset(endian), ph.p_align(endian));
        let flags = ph.p_flags(endian);
        if flags & elf::PF_W != 0 && flags & elf::PF_X != 0 {
            return Err(PackError::WritableExecutable { vaddr });
        }
        if vaddr % PAGE_SIZE != offset % PAGE_SIZE || align % PAGE_SIZE != 0 {
            return Err(PackError::MisalignedSegment { vaddr, offset, align });
        }
        let file_bytes = ph.data(endian, data).map_err(|()| PackError::SegmentOutsideFile { vaddr })?;
        let start = vaddr - base;
        let end = start + ph.p_filesz(endian);
        if end > image.len() as u64 {
            image.resize(end as usize, 0);
        }
        image[start as usize..end as usize].copy_from_slice(file_bytes);
        let mem_stop = start + ph.p_memsz(endian);
        mem_end = mem_end.max(mem_stop);
        let mut prot = 0;
        for (pf, p) in [(elf::PF_R, Prot::READ), (elf::PF_W, Prot::WRITE), (elf::PF_X, Prot::EXEC)] {
            if flags & pf != 0 {
                prot |= p;
            }
        }
        let seg = Segment { offset: start & !(PAGE_SIZE - 1), size: 0, prot: Prot(prot) };
        let seg = Segment { size: round_up(mem_stop) - seg.offset, ..seg };
        segments.push(seg);
    }
    segments.sort_by_key(|s| s.offset);
    merge_segments(&mut segments)?;
    let mem_size = round_up(mem_end);

    // Relocations: RELATIVE only; pre-write each addend into its slot.
    let mut relocs = BTreeMap::new();
    for s in sections.iter() {
        let kind = match s.sh_type(endian) {
            elf::SHT_REL => Some("SHT_REL"),
            elf::SHT_RELR => Some("SHT_RELR (packed relative relocations)"),
            _ => None,
        };
        if let Some(kind) = kind {
            return Err(PackError::UnsupportedRelocSection { section: section_name(&sections, s), kind });
        }
        let Some((relas, symtab_index)) = s.rela(endian, data)? else { continue };
        for rela in relas {
            let r_type = rela.r_type(endian, false);
            let offset = rela.r_offset(endian);
            if r_type != elf::R_X86_64_RELATIVE {
                let symbol = symbol_name(&sections, data, symtab_index, rela.r_sym(endian, false));
                return Err(PackError::BadRelocation { kind: reloc_type_name(r_type), offset, symbol });
            }
            let slot = offset.wrapping_sub(base);
            let addend = (rela.r_addend(endian) as u64).wrapping_sub(base);
            let in_image = slot % 8 == 0 && slot.checked_add(8).is_some_and(|e| e <= image.len() as u64);
            if !in_image {
                return Err(PackError::RelocationOutsideImage { offset });
            }
            image[slot as usize..slot as usize + 8].copy_from_slice(&addend.to_le_bytes());
            relocs.insert(slot, addend);
        }
    }

    // Undefined symbols, in either symbol table.
    for sh_type in [elf::SHT_SYMTAB, elf::SHT_DYNSYM] {
        let table = sections.symbols(endian, data, sh_type)?;
        for sym in table.symbols().iter().skip(1) {
            if sym.st_shndx(endian) == elf::SHN_UNDEF {
                let name = String::from_utf8_lossy(table.symbol_name(endian, sym)?).into_owned();
                if !name.is_empty() {
                    return Err(PackError::UndefinedSymbol(name));
                }
            }
        }
    }

    check_forbidden_symbols(&sections, data)?;
    let entries = read_entries(&sections, data, base, &relocs)?;
    Ok(Package::new(image, mem_size, segments, relocs.into_keys().collect(), entries)?)
}

/// Reads the `.entries` table: each record's function slot must carry a
/// RELATIVE relocation, whose addend is the entry's offset.
fn read_entries(
    sections: &SectionTable<'_, Header>,
    data: &[u8],
    base: u64,
    relocs: &BTreeMap<u64, u64>,
) -> Result<Vec<EntryPoint>, PackError> {
    let endian = LE;
    let Some((_, s)) = sections.section_by_name(endian, b".entries") else { return Err(PackError::NoEntries) };
    let bytes = s.data(endian, data).map_err(|_| PackError::BadEntries("section data outside the file".into()))?;
    let record = ENTRY_NAME_LEN + 8;
    if bytes.is_empty() {
        return Err(PackError::NoEntries);
    }
    if bytes.len() % record != 0 {
        return Err(PackError::BadEntries(format!("size {} is not a multiple of {record}", bytes.len())));
    }
    let addr = s.sh_addr(endian).wrapping_sub(base);
    bytes
        .chunks_exact(record)
        .enumerate()
        .map(|(i, rec)| {
            let name = decode_name(&rec[..ENTRY_NAME_LEN]).ok_or_else(|| PackError::BadEntries(format!("record {i} has a bad name")))?;
            let slot = addr + (i * record + ENTRY_NAME_LEN) as u64;
            let offset = *relocs
                .get(&slot)
                .ok_or_else(|| PackError::BadEntries(format!("entry `{name}`: its function pointer has no R_X86_64_RELATIVE relocation")))?;
            Ok(EntryPoint { name, offset })
        })
        .collect()
}

/// Symbol-name fragments that show a panic or formatting path was linked
/// in, with the reason given. The panic handler is only kept by the linker
/// when something can reach it.
const FORBIDDEN: [(&str, &str); 3] = [
    ("rust_begin_unwind", "the panic handler is reachable"),
    ("4core9panicking", "a panic is reachable"),
    ("4core3fmt", "core::fmt is linked in"),
];

/// Refuses a blob whose symbol table shows reachable panics or formatting.
fn check_forbidden_symbols(sections: &SectionTable<'_, Header>, data: &[u8]) -> Result<(), PackError> {
    let table = sections.symbols(LE, data, elf::SHT_SYMTAB)?;
    for sym in table.symbols() {
        let name = table.symbol_name(LE, sym)?;
        for (fragment, reason) in FORBIDDEN {
            if name.windows(fragment.len()).any(|w| w == fragment.as_bytes()) {
                return Err(PackError::ForbiddenSymbol { symbol: String::from_utf8_lossy(name).into_owned(), reason });
            }
        }
    }
    Ok(())
}

/// Merges segments whose page ranges touch the same page; refuses it when
/// their protections differ.
fn merge_segments(segments: &mut Vec<Segment>) -> Result<(), PackError> {
    let mut out: Vec<Segment> = Vec::with_capacity(segments.len());
    for seg in segments.drain(..) {
        match out.last_mut() {
            Some(prev) if seg.offset < prev.offset + prev.size => {
                if prev.prot != seg.prot {
                    return Err(PackError::SegmentsSharePage { first: prev.offset, second: seg.offset });
                }
                prev.size = prev.size.max(seg.offset + seg.size - prev.offset);
            }
            _ => out.push(seg),
        }
    }
    *segments = out;
    Ok(())
}

fn round_up(x: u64) -> u64 {
    x.div_ceil(PAGE_SIZE) * PAGE_SIZE
}

fn section_name(sections: &SectionTable<'_, Header>, s: &elf::SectionHeader64<LE>) -> String {
    sections.section_name(LE, s).map(|n| String::from_utf8_lossy(n).into_owned()).unwrap_or_else(|_| "?".into())
}

fn symbol_name(sections: &SectionTable<'_, Header>, data: &[u8], symtab: SectionIndex, index: u32) -> Option<String> {
    if index == 0 {
        return None;
    }
    let table = sections.symbol_table_by_index(LE, data, symtab).ok()?;
    let sym = table.symbol(object::SymbolIndex(index as usize)).ok()?;
    let name = table.symbol_name(LE, sym).ok()?;
    Some(String::from_utf8_lossy(name).into_owned())
}
