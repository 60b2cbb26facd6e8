//! `criu-rs page-server` over loopback TCP: receiving a dump's pages
//! (PageSink → images), and feeding `criu-rs lazy-pages --page-server`
//! (post-copy), including the connection breaking mid-way.

mod common;

use common::*;

use std::os::unix::process::ExitStatusExt;

use criu_core::images::consts::pagemap_flags::{LAZY, PRESENT};
use criu_core::images::{ImageDir, PAGE_SIZE};
use criu_core::pageserver::client::PageSink;
use criu_core::pageserver::proto::Target;
use criu_core::pageserver::server::FIRST_PAGES_ID;
use criu_core::pageserver::store::{read_pagemap, ImagesStore, PageStore};

const MIB: u64 = 1 << 20;

fn page_server(dir: &std::path::Path) -> (Proc, u16) {
    let port = free_port();
    let mut p = spawn_criu_rs(&["page-server", "-D", dir.to_str().unwrap(), "--address", "127.0.0.1", "--port", &port.to_string()]);
    wait_port(port, &mut p);
    (p, port)
}

#[test]
fn dump_pages_arrive_as_images() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, port) = page_server(dir.path());
    let data: Vec<u8> = (0..2000 * PAGE_SIZE as usize).map(|i| (i / 4096 + i % 251) as u8).collect();
    let mut sink = PageSink::connect(("127.0.0.1", port)).unwrap();
    assert!(!sink.open(Target::Task(77)).unwrap(), "no parent");
    sink.entry(0x10_0000, 2000, LAZY | PRESENT).unwrap();
    for piece in data.chunks(3 << 20) {
        sink.data(piece).unwrap();
    }
    sink.entry(0x90_0000, 3, LAZY).unwrap();
    sink.finish().unwrap();
    let (st, out, err) = srv.finish();
    assert!(st.success(), "{out}\n{err}");
    assert!(out.contains("2000 pages received"), "{out}");

    let images = ImageDir::open_unchecked(dir.path());
    let (pages_id, entries) = read_pagemap(&images, 77).unwrap();
    assert_eq!(pages_id, FIRST_PAGES_ID, "the server's numbering (CRIU's)");
    assert!(dir.path().join(format!("pages-{FIRST_PAGES_ID}.img")).exists());
    // 2000 pages sent in pieces are one entry, then the data-less one.
    let got: Vec<(u64, u64, u32)> = entries.iter().map(|e| (e.vaddr(), e.page_count(), e.flags())).collect();
    assert_eq!(got, [(0x10_0000, 2000, LAZY | PRESENT), (0x90_0000, 3, LAZY)]);
    let mut store = ImagesStore::new(images);
    let back = store.pages(77, 0x10_0000 + 1024 * PAGE_SIZE, 976 * PAGE_SIZE).unwrap();
    assert_eq!(back, &data[1024 * PAGE_SIZE as usize..]);
    assert!(store.pages(77, 0x90_0000, PAGE_SIZE).is_err(), "no data was sent for the LAZY-only entry");
}

/// Images (pagemaps and pages) for one stand-in task, the page server
/// serving them, and a lazy-pages daemon fetching over TCP.
fn post_copy(mode: &str, size: u64, extra: &[&str]) -> (tempfile::TempDir, Kid, Proc, Proc) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("lazy.sock");
    let mut k = Kid::spawn(mode, size, 0x6100_0000_0000, &sock);
    let images = ImageDir::open_unchecked(dir.path());
    k.write_images(&images);
    finish_images(&images);
    let (srv, port) = page_server(dir.path());
    let port = port.to_string();
    let mut args = vec![
        "lazy-pages", "-D", dir.path().to_str().unwrap(), "--page-server", "--address", "127.0.0.1",
        "--port", &port, "--lazy-socket", sock.to_str().unwrap(), "--tasks", "1",
    ];
    args.extend_from_slice(extra);
    let mut d = spawn_criu_rs(&args);
    wait_for(&sock, &mut d);
    k.go();
    (dir, k, d, srv)
}

#[test]
fn lazy_pages_fetched_from_the_page_server() {
    let (_dir, mut k, d, srv) = post_copy("check", 32 * MIB, &[]);
    let (st, out) = k.wait();
    assert!(st.success(), "{st}\n{out}");
    let (st, out, err) = d.finish();
    assert!(st.success(), "{out}\n{err}");
    let (st, out, err) = srv.finish();
    assert!(st.success(), "{out}\n{err}");
    assert!(out.contains(&format!("{} pages sent", 32 * MIB / PAGE_SIZE - 1)), "{out}");
}

#[test]
fn page_server_dying_mid_way_kills_the_task() {
    let (_dir, mut k, mut d, mut srv) = post_copy("halt", 16 * MIB, &["--no-background"]);
    assert_eq!(k.line(), "half");
    let pid = srv.pid();
    // SAFETY: SIGKILL to the page server this test started, not yet reaped.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let _ = srv.finish();
    k.go();
    let (st, out) = k.wait();
    assert_eq!(st.signal(), Some(9), "the task must be killed: {st}: {out}");
    assert!(!out.contains("done"), "{out}");
    let _ = d.pid();
    let (st, _, err) = d.finish();
    assert!(!st.success(), "the daemon must fail: {err}");
    // A reset, or the end of the stream before the answer.
    assert!(err.contains("page server connection") || err.contains("page server closed the connection"), "{err}");
}
