//! Unit tests of the embedded package, relocation and in-process loading.

use super::*;
use crate::abi::{SelftestRelocArgs, SELFTEST_RELOC_CHECKSUM};

const SELFTESTS: [&str; 3] = ["pie_selftest_reloc", "pie_selftest_syscall", "pie_selftest_write"];

/// A page-aligned address that is free right now.
/// A distinct address per caller, far from where mmap places things, so
/// tests running in parallel threads cannot take each other's spot.
fn free_address(slot: usize) -> usize {
    0x3a00_0000_0000 + slot * 0x1000_0000
}

#[test]
fn embedded_package_has_the_selftest_entries() {
    let pkg = embedded().expect("embedded package parses");
    for name in SELFTESTS {
        assert!(pkg.entry(name).is_some(), "missing entry {name}");
    }
    assert!(!pkg.relocs().is_empty(), "the self-test table needs relocations");
    assert!(pkg.segments().iter().any(|s| s.prot.executable()));
}

#[test]
fn relocate_into_adds_the_base_to_every_slot_only() {
    let pkg = embedded().unwrap();
    let mem = pkg.mem_size() as usize;
    let base = 0x7000_1234_5000usize;
    let mut buf = vec![0xAAu8; mem + 16];
    relocate_into(pkg, &mut buf, base).unwrap();
    assert!(buf[mem..].iter().all(|&b| b == 0xAA), "bytes past mem_size were touched");
    assert!(buf[pkg.image().len()..mem].iter().all(|&b| b == 0), "bss not zeroed");
    let mut expect = pkg.image().to_vec();
    for &off in pkg.relocs() {
        let off = off as usize;
        let v = u64::from_le_bytes(expect[off..off + 8].try_into().unwrap()) + base as u64;
        expect[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }
    assert_eq!(&buf[..expect.len()], &expect[..]);
}

#[test]
fn relocate_into_rejects_bad_destinations() {
    let pkg = embedded().unwrap();
    let mut small = vec![0u8; pkg.mem_size() as usize - 1];
    assert!(matches!(relocate_into(pkg, &mut small, 0x10000), Err(PieError::BufferTooSmall { .. })));
    let mut buf = vec![0u8; pkg.mem_size() as usize];
    assert!(matches!(relocate_into(pkg, &mut buf, 0x10010), Err(PieError::Misaligned(0x10010))));
    assert!(matches!(relocate_into(pkg, &mut buf, usize::MAX & !0xfff), Err(PieError::AddressOverflow { .. })));
}

#[test]
fn map_at_runs_the_reloc_selftest_in_process() {
    let pkg = embedded().unwrap();
    let addr = free_address(1);
    let loaded = Loaded::map_at(pkg, addr).expect("map_at");
    assert_eq!(loaded.base(), addr);
    let mut args = SelftestRelocArgs::default();
    // SAFETY: the entry takes a SelftestRelocArgs and returns.
    let rc = unsafe { loaded.call("pie_selftest_reloc", (&raw mut args).cast()) }.unwrap();
    assert_eq!(rc, 0);
    assert_eq!(args.checksum, SELFTEST_RELOC_CHECKSUM);
    let range = addr as u64..(addr + loaded.len()) as u64;
    for a in [args.table_addr, args.name_addr, args.fn_addr] {
        assert!(range.contains(&a), "{a:#x} is outside the blob at {range:x?}");
    }
    // SAFETY: as above; the name does not exist, nothing is called.
    assert!(matches!(unsafe { loaded.call("no_such_entry", (&raw mut args).cast()) }, Err(PieError::NoSuchEntry(_))));
}

#[test]
fn map_at_refuses_taken_and_misaligned_addresses() {
    let pkg = embedded().unwrap();
    let addr = free_address(2);
    let first = Loaded::map_at(pkg, addr).unwrap();
    assert!(matches!(Loaded::map_at(pkg, addr), Err(PieError::AddressInUse { .. })));
    assert!(matches!(Loaded::map_at(pkg, addr + 8), Err(PieError::Misaligned(_))));
    drop(first);
    // Drop unmapped it: the same address is free again.
    Loaded::map_at(pkg, addr).expect("address reusable after drop");
}
