//! Unit tests of the package format: round trip and rejection of bad input.

use super::*;

fn sample() -> Package {
    let mut image = vec![0u8; 0x1010];
    image[0x1008..0x1010].copy_from_slice(&0x20u64.to_le_bytes());
    Package::new(
        image,
        0x3000,
        vec![
            Segment { offset: 0, size: 0x1000, prot: Prot(Prot::READ | Prot::EXEC) },
            Segment { offset: 0x1000, size: 0x2000, prot: Prot(Prot::READ | Prot::WRITE) },
        ],
        vec![0x1008],
        vec![EntryPoint { name: "pie_a".into(), offset: 0x20 }],
    )
    .expect("sample package is valid")
}

/// Offsets of header fields, for corrupting them.
const IMAGE_SIZE_AT: usize = 16;
const MEM_SIZE_AT: usize = 24;
const NSEGS_AT: usize = 32;
const SEG0_PROT_AT: usize = 64 + 16;
const RELOC0_AT: usize = 64 + 2 * 24;
const ENTRY0_AT: usize = RELOC0_AT + 8;

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn round_trip() {
    let p = sample();
    let bytes = p.to_bytes();
    assert_eq!(Package::parse(&bytes).unwrap(), p);
    assert_eq!(p.entry("pie_a"), Some(0x20));
    assert_eq!(p.entry("nope"), None);
    assert!(p.summary().contains("pie_a"));
}

#[test]
fn rejects_every_truncation() {
    let bytes = sample().to_bytes();
    for len in 0..bytes.len() {
        assert!(
            matches!(Package::parse(&bytes[..len]), Err(PackageError::Truncated { .. })),
            "prefix of {len} bytes was not reported truncated"
        );
    }
    let mut long = bytes.clone();
    long.push(0);
    assert_eq!(Package::parse(&long), Err(PackageError::TrailingBytes { extra: 1 }));
}

#[test]
fn rejects_bad_magic_and_version() {
    let mut b = sample().to_bytes();
    b[0] = b'X';
    assert!(matches!(Package::parse(&b), Err(PackageError::BadMagic { .. })));
    let mut b = sample().to_bytes();
    b[8] = 2;
    assert_eq!(Package::parse(&b), Err(PackageError::UnsupportedVersion(2)));
}

#[test]
fn rejects_bad_sizes() {
    let mut b = sample().to_bytes();
    put_u64(&mut b, MEM_SIZE_AT, 0x3001);
    assert_eq!(Package::parse(&b), Err(PackageError::BadMemSize(0x3001)));
    let mut b = sample().to_bytes();
    put_u64(&mut b, MEM_SIZE_AT, 0x1000);
    assert!(matches!(Package::parse(&b), Err(PackageError::ImageLargerThanMem { .. })));
    // A huge segment count must be refused before anything is allocated.
    let mut b = sample().to_bytes();
    b[NSEGS_AT..NSEGS_AT + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(Package::parse(&b), Err(PackageError::BadImageOffset { .. })));
    let mut b = sample().to_bytes();
    put_u64(&mut b, IMAGE_SIZE_AT, u64::MAX);
    assert!(matches!(Package::parse(&b), Err(PackageError::ImageLargerThanMem { .. })));
}

#[test]
fn rejects_writable_executable_segment() {
    let mut b = sample().to_bytes();
    b[SEG0_PROT_AT] = 7;
    assert_eq!(Package::parse(&b), Err(PackageError::WritableAndExecutable { index: 0, offset: 0 }));
    b[SEG0_PROT_AT] = 9;
    assert_eq!(Package::parse(&b), Err(PackageError::BadProt { index: 0, prot: 9 }));
}

#[test]
fn rejects_bad_relocations() {
    let mut b = sample().to_bytes();
    put_u64(&mut b, RELOC0_AT, 0x1004);
    assert_eq!(Package::parse(&b), Err(PackageError::RelocMisaligned { offset: 0x1004 }));
    put_u64(&mut b, RELOC0_AT, 0x1010);
    assert_eq!(Package::parse(&b), Err(PackageError::RelocOutOfRange { offset: 0x1010, image: 0x1010 }));
    put_u64(&mut b, RELOC0_AT, u64::MAX - 7);
    assert!(matches!(Package::parse(&b), Err(PackageError::RelocOutOfRange { .. })));
}

#[test]
fn rejects_bad_entries() {
    let mut b = sample().to_bytes();
    put_u64(&mut b, ENTRY0_AT + ENTRY_NAME_LEN, 0x1000);
    assert!(matches!(Package::parse(&b), Err(PackageError::EntryNotExecutable { offset: 0x1000, .. })));
    let mut b = sample().to_bytes();
    b[ENTRY0_AT] = 0;
    assert_eq!(Package::parse(&b), Err(PackageError::BadEntryName { index: 0 }));
    let mut b = sample().to_bytes();
    b[ENTRY0_AT + 6] = b'x'; // garbage after the NUL terminator
    assert_eq!(Package::parse(&b), Err(PackageError::BadEntryName { index: 0 }));
}

#[test]
fn new_rejects_overlap_duplicates_and_empty_tables() {
    let rx = Prot(Prot::READ | Prot::EXEC);
    let seg = |offset, size| Segment { offset, size, prot: rx };
    let entry = |name: &str| EntryPoint { name: name.into(), offset: 0 };
    let err = Package::new(vec![], 0x2000, vec![seg(0, 0x2000), seg(0x1000, 0x1000)], vec![], vec![entry("a")]);
    assert_eq!(err, Err(PackageError::SegmentsOverlap { index: 1, offset: 0x1000 }));
    let err = Package::new(vec![], 0x1000, vec![seg(0, 0x1000)], vec![], vec![entry("a"), entry("a")]);
    assert_eq!(err, Err(PackageError::DuplicateEntry("a".into())));
    let err = Package::new(vec![], 0x1000, vec![seg(0, 0x1000)], vec![], vec![]);
    assert_eq!(err, Err(PackageError::NoEntries));
    let err = Package::new(vec![], 0x1000, vec![], vec![], vec![entry("a")]);
    assert_eq!(err, Err(PackageError::NoSegments));
    let err = Package::new(vec![], 0x1000, vec![seg(0, 0x2000)], vec![], vec![entry("a")]);
    assert!(matches!(err, Err(PackageError::BadSegment { index: 0, .. })));
}
