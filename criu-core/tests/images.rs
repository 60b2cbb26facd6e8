//! Image layer without crit: round trips of the sample set, rejection of
//! corrupt files (each error naming the file and the problem), temp-file
//! handling of writers, the inventory as completion marker.

mod common;

use std::io::Cursor;
use std::path::Path;

use common::{core_entry, write_sample_set, PID};
use criu_core::images::consts::{pagemap_flags, vma_status};
use criu_core::images::pb::*;
use criu_core::images::{
    ImageDir, ImageError, ImageKind, ImageReader, ImageWriter, Validate, IMG_COMMON_MAGIC,
    MAX_ENTRY_LEN,
};
use prost::Message;

/// An in-memory image: header of `kind` followed by `body`.
fn image_bytes(kind: ImageKind, body: &[u8]) -> Vec<u8> {
    let mut v = kind.header().bytes();
    v.extend_from_slice(body);
    v
}

/// A length-prefixed entry as it appears on disk.
fn framed(msg: &impl Message) -> Vec<u8> {
    let mut v = (msg.encoded_len() as u32).to_le_bytes().to_vec();
    v.extend(msg.encode_to_vec());
    v
}

fn reader(
    kind: ImageKind,
    bytes: Vec<u8>,
) -> criu_core::images::Result<ImageReader<Cursor<Vec<u8>>>> {
    ImageReader::from_reader("/imgs/test-1.img", Cursor::new(bytes), kind)
}

fn pstree(pid: u32) -> PstreeEntry {
    PstreeEntry {
        pid: Some(pid),
        ppid: Some(1),
        pgid: Some(pid),
        sid: Some(pid),
        threads: vec![pid],
    }
}

#[test]
fn sample_set_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ImageDir::create(tmp.path()).unwrap();
    let inv = write_sample_set(&dir);

    let dir = ImageDir::open(tmp.path()).unwrap();
    assert_eq!(dir.inventory(), Some(&inv));
    assert_eq!(
        dir.read_one::<CoreEntry>(ImageKind::Core, PID).unwrap(),
        core_entry()
    );
    let tree: Vec<PstreeEntry> = dir.read_all(ImageKind::Pstree, 0).unwrap();
    assert_eq!(tree[0].threads, vec![4242, 4243]);
    let mm: MmEntry = dir.read_one(ImageKind::Mm, PID).unwrap();
    assert_eq!(mm.vmas.len(), 3);
    assert_eq!(mm.vmas[1].fd, Some(-1));

    let mut pm = dir.open_image(ImageKind::Pagemap, PID).unwrap();
    let head: PagemapHead = pm.read_next().unwrap();
    let ents: Vec<PagemapEntry> = pm.read_all().unwrap();
    assert_eq!(head.pages_id, Some(1));
    assert_eq!(
        ents,
        vec![PagemapEntry::new(
            0x7ffc_0002_0000,
            1,
            pagemap_flags::PRESENT
        )]
    );
    assert_eq!(ents[0].page_count(), 1);
    let pages = dir.open_pages(1).unwrap();
    assert_eq!(pages.metadata().unwrap().len(), 4096);

    let files: Vec<FileEntry> = dir.read_all(ImageKind::Files, 0).unwrap();
    assert_eq!(files[0].reg.as_ref().unwrap().name(), "/tmp/data file");
    assert_eq!(files[1].pipe.as_ref().unwrap().pipe_id, Some(77_000));

    let mut pd = dir.open_image(ImageKind::PipesData, 0).unwrap();
    let (e, data) = pd
        .read_entry_with_payload::<PipeDataEntry>()
        .unwrap()
        .unwrap();
    assert_eq!((e.pipe_id, data.as_slice()), (Some(77_000), &b"hello"[..]));
    assert!(pd
        .read_entry_with_payload::<PipeDataEntry>()
        .unwrap()
        .is_none());

    let mut gf = dir.open_image(ImageKind::GhostFile, 0x1f).unwrap();
    let g: GhostFileEntry = gf.read_next().unwrap();
    assert_eq!(gf.read_raw(g.size()).unwrap(), b"abc");
    gf.expect_eof("ghost_file_entry").unwrap();
}

#[test]
fn file_names_follow_criu() {
    let names: Vec<String> = [
        (ImageKind::Inventory, 0),
        (ImageKind::Core, 12),
        (ImageKind::Pages, 3),
        (ImageKind::Pagemap, 12),
        (ImageKind::ShmemPagemap, 5),
        (ImageKind::Fdinfo, 2),
        (ImageKind::GhostFile, 0x1f),
        (ImageKind::StatsDump, 0),
        (ImageKind::Psignal, 13),
    ]
    .iter()
    .map(|(k, id)| k.file_name(*id))
    .collect();
    assert_eq!(
        names,
        [
            "inventory.img",
            "core-12.img",
            "pages-3.img",
            "pagemap-12.img",
            "pagemap-shmem-5.img",
            "fdinfo-2.img",
            "ghost-file-1f.img",
            "stats-dump",
            "signal-p-13.img"
        ]
    );
    assert_eq!(
        ImageKind::Core.header().bytes(),
        [0x19, 0x43, 0x56, 0x54, 0x47, 0x38, 0x05, 0x55]
    );
    assert_eq!(
        ImageKind::Inventory.header().bytes(),
        [0x16, 0x31, 0x31, 0x58]
    );
    assert!(ImageKind::Pages.header().bytes().is_empty());
}

fn expect_err<T>(r: criu_core::images::Result<T>, parts: &[&str]) -> ImageError {
    let Err(e) = r else {
        panic!("expected an error containing {parts:?}")
    };
    let text = e.to_string();
    for p in parts {
        assert!(text.contains(p), "error {text:?} lacks {p:?}");
    }
    e
}

#[test]
fn bad_magic_is_rejected() {
    let bytes = image_bytes(ImageKind::Core, &framed(&core_entry()));
    let e = expect_err(
        reader(ImageKind::Mm, bytes.clone()),
        &[
            "/imgs/test-1.img",
            "bad magic 0x55053847",
            "0x57492820",
            "mm",
        ],
    );
    assert!(matches!(
        e,
        ImageError::BadMagic {
            found: 0x5505_3847,
            ..
        }
    ));

    let mut wrong_class = bytes;
    wrong_class[0] ^= 1;
    expect_err(
        reader(ImageKind::Core, wrong_class),
        &["test-1.img", "bad magic 0x54564318", "IMG_COMMON"],
    );

    // A service image is not a common one even with the right type magic.
    let stats = image_bytes(ImageKind::StatsDump, &[]);
    let mut as_common = stats.clone();
    as_common[..4].copy_from_slice(&IMG_COMMON_MAGIC.to_le_bytes());
    expect_err(
        reader(ImageKind::StatsDump, as_common),
        &["bad magic", "IMG_SERVICE"],
    );
    assert!(reader(ImageKind::StatsDump, stats).is_ok());
}

#[test]
fn truncation_is_rejected() {
    let full = image_bytes(ImageKind::Pstree, &framed(&pstree(7)));
    expect_err(
        reader(ImageKind::Pstree, full[..3].to_vec()),
        &["test-1.img", "truncated header at offset 0"],
    );
    expect_err(
        reader(ImageKind::Pstree, full[..6].to_vec()),
        &["truncated header at offset 4", "got 2"],
    );

    let mut r = reader(ImageKind::Pstree, full[..10].to_vec()).unwrap();
    expect_err(
        r.read_entry::<PstreeEntry>(),
        &["test-1.img", "truncated entry length at offset 8"],
    );

    let cut = full.len() - 1;
    let mut r = reader(ImageKind::Pstree, full[..cut].to_vec()).unwrap();
    let e = expect_err(
        r.read_entry::<PstreeEntry>(),
        &["test-1.img", "truncated pstree_entry at offset 8"],
    );
    assert!(matches!(e, ImageError::Truncated { .. }));

    let mut r = reader(ImageKind::Pstree, full).unwrap();
    assert_eq!(r.read_entry::<PstreeEntry>().unwrap(), Some(pstree(7)));
    assert_eq!(r.read_entry::<PstreeEntry>().unwrap(), None);

    // A payload cut short.
    let mut body = framed(&PipeDataEntry {
        pipe_id: Some(1),
        bytes: Some(10),
        size: None,
    });
    body.extend_from_slice(b"short");
    let mut r = reader(
        ImageKind::PipesData,
        image_bytes(ImageKind::PipesData, &body),
    )
    .unwrap();
    expect_err(
        r.read_entry_with_payload::<PipeDataEntry>(),
        &["truncated raw payload", "wanted 10 bytes, got 5"],
    );
}

#[test]
fn oversize_entry_is_rejected() {
    let mut body = ((MAX_ENTRY_LEN + 1) as u32).to_le_bytes().to_vec();
    body.extend_from_slice(&[0; 16]);
    let mut r = reader(ImageKind::Core, image_bytes(ImageKind::Core, &body)).unwrap();
    let e = expect_err(
        r.read_entry::<CoreEntry>(),
        &[
            "test-1.img",
            "core_entry at offset 8",
            "over the 67108864-byte limit",
        ],
    );
    assert!(matches!(e, ImageError::Oversize { .. }));

    let mut r = reader(
        ImageKind::Core,
        image_bytes(ImageKind::Core, &u32::MAX.to_le_bytes()),
    )
    .unwrap();
    expect_err(r.read_entry::<CoreEntry>(), &["4294967295 bytes"]);
}

#[test]
fn undecodable_entry_is_rejected() {
    let mut r = reader(
        ImageKind::Core,
        image_bytes(ImageKind::Core, &[3, 0, 0, 0, 0xff, 0xff, 0xff]),
    )
    .unwrap();
    let e = expect_err(
        r.read_entry::<CoreEntry>(),
        &["test-1.img", "cannot decode core_entry at offset 8"],
    );
    assert!(matches!(e, ImageError::Decode { .. }));
}

#[test]
fn missing_required_field_is_rejected() {
    let mut no_pid = pstree(9);
    no_pid.pid = None;
    let mut r = reader(
        ImageKind::Pstree,
        image_bytes(ImageKind::Pstree, &framed(&no_pid)),
    )
    .unwrap();
    let e = expect_err(
        r.read_entry::<PstreeEntry>(),
        &[
            "test-1.img",
            "pstree_entry entry at offset 8",
            "required field `pid`",
        ],
    );
    assert!(matches!(e, ImageError::MissingRequired { .. }));

    // Nested: the path of the missing field is given.
    let mut core = core_entry();
    core.thread_info
        .as_mut()
        .unwrap()
        .gpregs
        .as_mut()
        .unwrap()
        .ip = None;
    assert_eq!(
        core.missing_required().as_deref(),
        Some("thread_info.gpregs.ip")
    );
    let mut r = reader(
        ImageKind::Core,
        image_bytes(ImageKind::Core, &framed(&core)),
    )
    .unwrap();
    expect_err(r.read_entry::<CoreEntry>(), &["`thread_info.gpregs.ip`"]);

    let mut core = core_entry();
    core.tc.as_mut().unwrap().sigactions[0].mask = None;
    assert_eq!(
        core.missing_required().as_deref(),
        Some("tc.sigactions[0].mask")
    );

    // The writer refuses such an entry and leaves no file behind.
    let tmp = tempfile::tempdir().unwrap();
    let dir = ImageDir::create(tmp.path()).unwrap();
    expect_err(
        dir.write_one(ImageKind::Core, 1, &core),
        &["core-1.img", "`tc.sigactions[0].mask`"],
    );
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "no file, not even a temporary one"
    );
}

#[test]
fn trailing_data_and_empty_images_are_rejected() {
    let mut body = framed(&FsEntry {
        cwd_id: Some(1),
        root_id: Some(2),
        umask: None,
    });
    body.extend_from_slice(&[1, 0, 0, 0, 0]);
    let mut r = reader(ImageKind::Fs, image_bytes(ImageKind::Fs, &body)).unwrap();
    expect_err(
        r.read_one::<FsEntry>(),
        &["test-1.img", "unexpected data after the last fs_entry"],
    );

    let mut r = reader(ImageKind::Fs, image_bytes(ImageKind::Fs, &[])).unwrap();
    expect_err(
        r.read_one::<FsEntry>(),
        &["test-1.img", "no fs_entry entry"],
    );
}

#[test]
fn unfinished_writer_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ImageDir::create(tmp.path()).unwrap();
    {
        let mut w = dir.create_image(ImageKind::Pstree, 0).unwrap();
        w.write_entry(&pstree(3)).unwrap();
        // Dropped without finish(): as if the dump failed here.
    }
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);

    let mut w = dir.create_image(ImageKind::Pstree, 0).unwrap();
    w.write_entry(&pstree(3)).unwrap();
    assert!(
        !dir.exists(ImageKind::Pstree, 0),
        "not visible before finish"
    );
    w.finish().unwrap();
    assert_eq!(
        dir.read_all::<PstreeEntry>(ImageKind::Pstree, 0).unwrap(),
        vec![pstree(3)]
    );

    let e = ImageWriter::create(tmp.path().join("no/such/dir/core-1.img"), ImageKind::Core);
    expect_err(e, &["no/such/dir/.core-1.img.part", "create"]);
}

fn inventory(version: u32) -> InventoryEntry {
    InventoryEntry {
        img_version: Some(version),
        fdinfo_per_id: Some(true),
        ..Default::default()
    }
}

#[test]
fn inventory_marks_a_complete_dump() {
    let tmp = tempfile::tempdir().unwrap();
    let path: &Path = tmp.path();
    let e = expect_err(ImageDir::open(path), &["inventory.img", "open"]);
    assert!(matches!(e, ImageError::Io { .. }));

    let dir = ImageDir::create(path).unwrap();
    expect_err(
        dir.write_inventory(&inventory(1)),
        &["inventory.img", "unsupported image version 1 (expected 2)"],
    );
    dir.write_inventory(&inventory(2)).unwrap();
    assert!(ImageDir::open(path).is_ok());

    // A new dump into the same directory invalidates the old set at once.
    ImageDir::create(path).unwrap();
    expect_err(ImageDir::open(path), &["inventory.img"]);

    // An inventory from a different version is refused on open.
    let mut w = ImageWriter::create(path.join("inventory.img"), ImageKind::Inventory).unwrap();
    w.write_entry(&inventory(1)).unwrap();
    w.finish().unwrap();
    expect_err(
        ImageDir::open(path),
        &["inventory.img", "unsupported image version 1"],
    );
}

#[test]
fn payload_length_must_match() {
    let mut w =
        ImageWriter::from_writer("pipes-data.img", Vec::new(), ImageKind::PipesData).unwrap();
    let e = PipeDataEntry {
        pipe_id: Some(1),
        bytes: Some(4),
        size: None,
    };
    expect_err(
        w.write_entry_with_payload(&e, b"abc"),
        &["pipes-data.img", "4-byte payload, but 3 bytes"],
    );
    w.write_entry_with_payload(&e, b"abcd").unwrap();
    let bytes = w.into_inner().unwrap();
    let mut r = reader(ImageKind::PipesData, bytes).unwrap();
    assert_eq!(
        r.read_entry_with_payload::<PipeDataEntry>().unwrap(),
        Some((e, b"abcd".to_vec()))
    );
}

#[test]
fn kinds_are_recognised_from_names_and_headers() {
    assert_eq!(
        ImageKind::from_file_name("core-12.img"),
        Some((ImageKind::Core, 12))
    );
    assert_eq!(
        ImageKind::from_file_name("pagemap-shmem-5.img"),
        Some((ImageKind::ShmemPagemap, 5))
    );
    assert_eq!(
        ImageKind::from_file_name("ghost-file-1f.img"),
        Some((ImageKind::GhostFile, 0x1f))
    );
    assert_eq!(
        ImageKind::from_file_name("fifo-data.img"),
        Some((ImageKind::FifoData, 0))
    );
    assert_eq!(
        ImageKind::from_file_name("stats-dump"),
        Some((ImageKind::StatsDump, 0))
    );
    assert_eq!(ImageKind::from_file_name("core-x.img"), None);
    assert_eq!(ImageKind::from_file_name("core.img"), None);
    assert_eq!(ImageKind::from_file_name("files.json"), None);
    for k in ImageKind::ALL {
        assert_eq!(
            ImageKind::from_file_name(&k.file_name(77)).map(|x| x.0),
            Some(*k),
            "{k:?}"
        );
    }

    let tmp = tempfile::tempdir().unwrap();
    write_sample_set(&ImageDir::create(tmp.path()).unwrap());
    let mut seen = 0;
    for e in std::fs::read_dir(tmp.path()).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_owned();
        let (want, _) = ImageKind::from_file_name(&name).unwrap();
        assert_eq!(ImageReader::open_detect(&p).unwrap().kind(), want, "{name}");
        seen += 1;
    }
    assert!(seen >= 14);
    // Shared magics are told apart by name; unknown headers are an error.
    let head = ImageKind::ShmemPagemap.header().bytes();
    assert_eq!(
        ImageKind::detect("pagemap-shmem-3.img", &head),
        Some(ImageKind::ShmemPagemap)
    );
    assert_eq!(
        ImageKind::detect("pagemap-3.img", &head),
        Some(ImageKind::Pagemap)
    );
    let junk = tmp.path().join("junk.img");
    std::fs::write(&junk, [1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    expect_err(
        ImageReader::open_detect(&junk),
        &["junk.img", "not a known image kind"],
    );
}

#[test]
fn file_entry_unions_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ImageDir::create(tmp.path()).unwrap();
    write_sample_set(&dir);
    assert_eq!(dir.read_files().unwrap().len(), 6);

    let mut wrong = FileEntry::reg(3, "/x", 0);
    wrong.r#type = Some(FdTypes::Pipe as i32);
    assert_eq!(
        wrong.union_error().as_deref(),
        Some("type pipe with parts [\"reg\"]")
    );
    dir.write_all(ImageKind::Files, 0, &[FileEntry::reg(1, "/a", 0), wrong])
        .unwrap();
    expect_err(
        dir.read_files(),
        &[
            "files.img",
            "file_entry entry at offset",
            "type pipe with parts",
        ],
    );

    let bare = FileEntry {
        r#type: Some(FdTypes::Reg as i32),
        id: Some(1),
        ..Default::default()
    };
    assert_eq!(
        bare.union_error().as_deref(),
        Some("type reg without its `reg` part")
    );
}

#[test]
fn dump_inventory_matches_criu_defaults() {
    let ids = common::task_ids();
    let inv = InventoryEntry::for_dump(ids, Lsmtype::Apparmor);
    assert_eq!(inv.img_version, Some(2));
    assert_eq!((inv.fdinfo_per_id, inv.ns_per_id), (Some(true), Some(true)));
    assert_eq!(inv.lsmtype(), Lsmtype::Apparmor);
    assert_eq!(inv.missing_required(), None);
}

fn fpregs(c: &mut CoreEntry) -> &mut UserX86FpregsEntry {
    c.thread_info.as_mut().unwrap().fpregs.as_mut().unwrap()
}

#[test]
fn restore_checks_reject_inconsistent_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ImageDir::create(tmp.path()).unwrap();
    write_sample_set(&dir);
    assert!(dir.read_core(PID, true).is_ok());
    assert!(dir.read_core(common::THREAD, false).is_ok());
    expect_err(
        dir.read_core(common::THREAD, true),
        &["core-4243.img", "core_entry", "leader without tc"],
    );
    let mm = dir.read_mm(PID).unwrap();
    let (pages_id, pm) = dir.read_pagemap(PID, &mm).unwrap();
    assert_eq!((pages_id, pm.len()), (1, 1));

    let mut core = core_entry();
    fpregs(&mut core).xmm_space.pop();
    assert_eq!(
        core.restore_error(true).as_deref(),
        Some("fpregs.xmm_space has 63 elements, expected 64")
    );
    let mut core = core_entry();
    fpregs(&mut core).xsave.as_mut().unwrap().pkru = vec![1];
    assert_eq!(
        core.restore_error(true).as_deref(),
        Some("xsave.pkru has 1 elements, expected 2")
    );
    let mut core = core_entry();
    core.tc.as_mut().unwrap().sigactions.pop();
    dir.write_one(ImageKind::Core, 1, &core).unwrap();
    expect_err(
        dir.read_core(1, true),
        &["core-1.img", "61 sigactions, expected 62"],
    );
    core.mtype = Some(core_entry::March::Aarch64 as i32);
    assert!(core.restore_error(true).unwrap().contains("not x86-64"));

    let mut bad = mm.clone();
    bad.vmas.swap(0, 1);
    dir.write_one(ImageKind::Mm, 2, &bad).unwrap();
    expect_err(
        dir.read_mm(2),
        &[
            "mm-2.img",
            "mm_entry",
            "vmas[1] 0x400000-0x402000 overlaps or precedes",
        ],
    );
    let mut bad = mm.clone();
    bad.vmas[0].end = Some(0x40_2001);
    assert!(bad.layout_error().unwrap().contains("not page-aligned"));
    bad.vmas[0].end = bad.vmas[0].start;
    assert!(bad.layout_error().unwrap().contains("empty or inverted"));

    let outside = PagemapEntry::new(0x50_0000, 1, pagemap_flags::PRESENT);
    let mut w = dir.create_image(ImageKind::Pagemap, 3).unwrap();
    w.write_entry(&PagemapHead { pages_id: Some(2) }).unwrap();
    w.write_entry(&outside).unwrap();
    w.finish().unwrap();
    expect_err(
        dir.read_pagemap(3, &mm),
        &[
            "pagemap-3.img",
            "entry 0 0x500000-0x501000 is not inside the VMAs",
        ],
    );
    let across = PagemapEntry::new(0x40_1000, 2, pagemap_flags::PRESENT);
    assert!(criu_core::images::pagemap_error(&mm.vmas, &[across])
        .unwrap()
        .contains("not inside the VMAs"));
    // Adjacent areas: one entry may span them, as CRIU writes it.
    let mut next = mm.vmas.clone();
    next.insert(1, common::vma(0x40_2000, 0x40_3000, 3, 2, vma_status::AREA_REGULAR | vma_status::ANON_PRIVATE));
    assert_eq!(criu_core::images::pagemap_error(&next, &[across]), None);
    // ... and is read cut at the boundary (a UFFDIO_COPY stays in one VMA).
    let cut = criu_core::images::split_at_areas(&next, vec![across]);
    let got: Vec<(u64, u64, u32)> = cut.iter().map(|e| (e.vaddr(), e.page_count(), e.flags())).collect();
    assert_eq!(got, [(0x40_1000, 1, pagemap_flags::PRESENT), (0x40_2000, 1, pagemap_flags::PRESENT)]);
    let huge = PagemapEntry::new(0x40_0000, u64::MAX / 2, pagemap_flags::PRESENT);
    assert!(criu_core::images::pagemap_error(&mm.vmas, &[huge])
        .unwrap()
        .contains("overflow"));
    let a = PagemapEntry::new(0x40_0000, 1, pagemap_flags::PRESENT);
    assert!(criu_core::images::pagemap_error(&mm.vmas, &[a, a])
        .unwrap()
        .contains("overlaps"));
}
