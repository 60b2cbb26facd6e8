//! The page server in-process over loopback TCP, speaking CRIU's protocol
//! (`page_server_iov`) with raw requests as CRIU's dump and lazy-pages
//! daemon send them, and through criu-rs's own [`PageSink`] and
//! [`PageClient`]: OPEN2/ADD_F/HOLE/ADD/PARENT/CLOSE write the images CRIU's
//! server writes (pages ids from 0x10001, task and shared memory pagemaps,
//! the parent's answers); a dump gone before CLOSE is an error; GET answers
//! with as many pages as one run holds, and a GET of pages the server does
//! not have ends the session, as CRIU's does.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use criu_core::images::consts::pagemap_flags::{LAZY, PARENT, PRESENT};
use criu_core::images::pb::PagemapHead;
use criu_core::images::{ImageDir, ImageKind, PAGE_SIZE};
use criu_core::pageserver::client::{PageClient, PageSink};
use criu_core::pageserver::proto::{Cmd, Iov, Target};
use criu_core::pageserver::server::{serve_one, SessionStats, FIRST_PAGES_ID};
use criu_core::pageserver::store::{read_pagemap, ImagesStore, MemStore, PageStore};
use criu_core::pageserver::PageServerError;

type Server = std::thread::JoinHandle<Result<SessionStats, PageServerError>>;

/// A server writing into `dir`, and its address.
fn put_server(dir: &std::path::Path) -> (std::net::SocketAddr, Server) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let images = ImageDir::open_unchecked(dir);
    (addr, std::thread::spawn(move || serve_one(&listener, Some(&images), None)))
}

fn send(s: &mut TcpStream, iov: Iov, data: &[u8]) {
    s.write_all(&iov.encode()).unwrap();
    s.write_all(data).unwrap();
}

fn answer<const N: usize>(s: &mut TcpStream) -> [u8; N] {
    let mut b = [0u8; N];
    s.read_exact(&mut b).unwrap();
    b
}

fn pages(n: usize, seed: u8) -> Vec<u8> {
    (0..n * PAGE_SIZE as usize).map(|i| (i / 4096) as u8 ^ seed ^ i as u8).collect()
}

fn add_f(t: Target, vaddr: u64, nr: u64, flags: u32) -> Iov {
    Iov { cmd: Cmd::AddF, flags, nr_pages: nr, vaddr, dst_id: t.encode() }
}

/// (vaddr, pages, flags) of a pagemap, and its pages id.
fn entries(dir: &ImageDir, pid: u32) -> (u32, Vec<(u64, u64, u32)>) {
    let (id, pm) = read_pagemap(dir, pid).unwrap();
    (id, pm.iter().map(|e| (e.vaddr(), e.page_count(), e.flags())).collect())
}

#[test]
fn a_dump_as_criu_sends_it_makes_criu_s_images() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, server) = put_server(dir.path());
    let mut s = TcpStream::connect(addr).unwrap();
    let (task, shmem) = (Target::Task(9), Target::Shmem(0x51));
    let (a, b, c) = (pages(2, 1), pages(1, 2), pages(3, 3));
    let p = PAGE_SIZE;
    send(&mut s, Iov::bare(Cmd::Open2, task.encode()), &[]);
    assert_eq!(answer::<1>(&mut s), [0], "no parent");
    send(&mut s, add_f(task, 0x1000_0000, 2, PRESENT), &a);
    send(&mut s, add_f(task, 0x1000_0000 + 2 * p, 5, LAZY), &[]);
    send(&mut s, add_f(task, 0x2000_0000, 4, PARENT), &[]);
    // An old dump's ADD (PRESENT implied) and HOLE (PARENT implied).
    send(&mut s, Iov { cmd: Cmd::Add, flags: 0, nr_pages: 1, vaddr: 0x3000_0000, dst_id: task.encode() }, &b);
    send(&mut s, Iov { cmd: Cmd::Hole, flags: 0, nr_pages: 2, vaddr: 0x3000_1000, dst_id: task.encode() }, &[]);
    send(&mut s, Iov::bare(Cmd::Parent, shmem.encode()), &[]);
    assert_eq!(i32::from_le_bytes(answer(&mut s)), 0);
    send(&mut s, Iov::bare(Cmd::Open2, shmem.encode()), &[]);
    assert_eq!(answer::<1>(&mut s), [0]);
    send(&mut s, add_f(shmem, 0, 3, PRESENT), &c);
    send(&mut s, Iov::bare(Cmd::Close, 0), &[]);
    assert_eq!(i32::from_le_bytes(answer(&mut s)), 0, "CLOSE's status");
    drop(s);
    assert_eq!(server.join().unwrap().unwrap().pages_put, 6);

    let images = ImageDir::open_unchecked(dir.path());
    let (id, got) = entries(&images, 9);
    assert_eq!(id, FIRST_PAGES_ID);
    assert_eq!(
        got,
        [
            (0x1000_0000, 2, PRESENT),
            (0x1000_0000 + 2 * p, 5, LAZY),
            (0x2000_0000, 4, PARENT),
            (0x3000_0000, 1, PRESENT),
            (0x3000_1000, 2, PARENT)
        ]
    );
    let head: PagemapHead = images.open_image(ImageKind::ShmemPagemap, 0x51).unwrap().read_next().unwrap();
    assert_eq!(head.pages_id(), FIRST_PAGES_ID + 1);
    assert_eq!(std::fs::read(dir.path().join(format!("pages-{}.img", FIRST_PAGES_ID + 1))).unwrap(), c);
    let mut store = ImagesStore::new(images);
    assert_eq!(store.pages(9, 0x1000_0000, 2 * p).unwrap(), &a[..]);
    assert_eq!(store.pages(9, 0x3000_0000, p).unwrap(), &b[..]);
}

#[test]
fn the_parent_is_looked_for_in_the_servers_directory() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join("pre");
    std::fs::create_dir(&parent).unwrap();
    std::fs::write(parent.join("pagemap-9.img"), b"").unwrap();
    let served = dir.path().join("dump");
    std::fs::create_dir(&served).unwrap();
    std::os::unix::fs::symlink("../pre", served.join("parent")).unwrap();
    let (addr, server) = put_server(&served);
    let mut sink = PageSink::connect(addr).unwrap();
    assert!(sink.open(Target::Task(9)).unwrap(), "pagemap-9.img is in the parent");
    sink.entry(0x4000, 1, PARENT).unwrap();
    assert!(!sink.open(Target::Task(10)).unwrap(), "pagemap-10.img is not");
    sink.entry(0x4000, 2, PRESENT).unwrap();
    // The entry's data must be there before anything else.
    assert!(matches!(sink.open(Target::Task(11)), Err(PageServerError::Protocol(_))));
    let data = pages(2, 7);
    sink.data(&data[..100]).unwrap();
    sink.data(&data[100..]).unwrap();
    assert!(sink.data(&[0; 1]).is_err(), "more bytes than the entry has");
    sink.finish().unwrap();
    server.join().unwrap().unwrap();
    let images = ImageDir::open_unchecked(&served);
    assert_eq!(entries(&images, 9).1, [(0x4000, 1, PARENT)]);
    assert_eq!(entries(&images, 10).1, [(0x4000, 2, PRESENT)]);
    assert_eq!(ImagesStore::new(images).pages(10, 0x4000, 2 * PAGE_SIZE).unwrap(), &data[..]);
}

#[test]
fn a_dump_gone_before_close_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    // Mid-entry: its pages cut short.
    let (addr, server) = put_server(dir.path());
    let mut s = TcpStream::connect(addr).unwrap();
    send(&mut s, Iov::bare(Cmd::Open, Target::Task(9).encode()), &[]);
    send(&mut s, add_f(Target::Task(9), 0x1000_0000, 2, PRESENT), &pages(1, 0));
    drop(s);
    assert!(server.join().unwrap().is_err(), "pages cut short");
    // Between entries.
    let (addr, server) = put_server(dir.path());
    let mut s = TcpStream::connect(addr).unwrap();
    send(&mut s, Iov::bare(Cmd::Open, Target::Task(9).encode()), &[]);
    send(&mut s, add_f(Target::Task(9), 0x1000_0000, 1, PRESENT), &pages(1, 0));
    drop(s);
    match server.join().unwrap() {
        Err(PageServerError::Protocol(m)) => assert!(m.contains("no CLOSE"), "{m}"),
        r => panic!("a dump that went away without CLOSE must be an error, got {r:?}"),
    }
    // An image opened twice, an unknown command: the connection is closed,
    // and the client sees it at its next answer.
    let (addr, server) = put_server(dir.path());
    let mut sink = PageSink::connect(addr).unwrap();
    sink.open(Target::Task(9)).unwrap();
    match sink.open(Target::Task(9)) {
        Err(PageServerError::Closed { what }) => assert!(what.contains("OPEN"), "{what}"),
        r => panic!("{r:?}"),
    }
    assert!(server.join().unwrap().is_err());
    let (addr, server) = put_server(dir.path());
    let mut s = TcpStream::connect(addr).unwrap();
    let mut junk = Iov::bare(Cmd::Close, 0).encode();
    junk[0] = 0x99;
    s.write_all(&junk).unwrap();
    assert!(matches!(server.join().unwrap(), Err(PageServerError::Protocol(_))));
}

#[test]
fn get_answers_as_criu_s_lazy_source_does() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let data = pages(8, 5);
    let more = pages(2, 6);
    let mut store = MemStore::new();
    store.insert(5, 0x40_0000, data.clone());
    store.insert(5, 0x50_0000, more.clone());
    let server = std::thread::spawn(move || serve_one(&listener, None, Some(&mut store)).map(|s| s.pages_got));
    // Raw, as CRIU's lazy-pages daemon asks: dst_id is the bare pid; the
    // answer is an ADD_F header with at most the pages one run holds.
    let mut s = TcpStream::connect(addr).unwrap();
    send(&mut s, Iov { cmd: Cmd::Get, flags: 0, nr_pages: 4, vaddr: 0x40_0000 + 6 * PAGE_SIZE, dst_id: 5 }, &[]);
    let head = Iov::decode(&answer(&mut s)).unwrap();
    assert_eq!(head, Iov { cmd: Cmd::AddF, flags: PRESENT, nr_pages: 2, vaddr: 0x40_0000 + 6 * PAGE_SIZE, dst_id: 5 });
    let mut got = vec![0u8; 2 * PAGE_SIZE as usize];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, &data[6 * 4096..]);
    send(&mut s, Iov::bare(Cmd::Close, 0), &[]);
    assert_eq!(i32::from_le_bytes(answer(&mut s)), 0);
    assert_eq!(server.join().unwrap().unwrap(), 2);

    // Through PageClient: ranges within a run; one reaching past it is an
    // error (the server closes the session, having no such pages).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut store = MemStore::new();
    store.insert(5, 0x40_0000, data.clone());
    let server = std::thread::spawn(move || serve_one(&listener, None, Some(&mut store)).map(|s| s.pages_got));
    let mut c = PageClient::connect(addr).unwrap();
    assert_eq!(c.get(5, 0x40_0000 + 2 * PAGE_SIZE, 3 * PAGE_SIZE).unwrap(), &data[2 * 4096..5 * 4096]);
    match c.get(5, 0x40_0000 + 6 * PAGE_SIZE, 4 * PAGE_SIZE) {
        Err(PageServerError::Closed { what }) => assert!(what.contains("GET"), "{what}"),
        r => panic!("reading past the stored pages must fail, got {r:?}"),
    }
    match server.join().unwrap() {
        Err(PageServerError::NoData { pid: 5, .. }) => {}
        r => panic!("{r:?}"),
    }
    // An unknown pid ends the session too.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut store = MemStore::new();
    let server = std::thread::spawn(move || serve_one(&listener, None, Some(&mut store)).map(|s| s.pages_got));
    let mut c = PageClient::connect(addr).unwrap();
    assert!(c.get(6, 0x40_0000, PAGE_SIZE).is_err());
    assert!(matches!(server.join().unwrap(), Err(PageServerError::UnknownPid(6))));
}

#[test]
fn a_server_gone_before_closing_fails_the_dump() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Answers OPEN2, reads one entry, then goes without answering CLOSE.
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut b = [0u8; 32];
        s.read_exact(&mut b).unwrap();
        assert_eq!(Iov::decode(&b).unwrap().cmd, Cmd::Open2);
        s.write_all(&[0]).unwrap();
        s.read_exact(&mut b).unwrap();
        let iov = Iov::decode(&b).unwrap();
        let mut data = vec![0u8; iov.len() as usize];
        s.read_exact(&mut data).unwrap();
        s.read_exact(&mut b).unwrap();
        assert_eq!(Iov::decode(&b).unwrap().cmd, Cmd::Close);
    });
    let mut sink = PageSink::connect(addr).unwrap();
    sink.open(Target::Task(3)).unwrap();
    sink.entry(0x1000, 1, PRESENT).unwrap();
    sink.data(&pages(1, 0)).unwrap();
    match sink.finish() {
        Err(PageServerError::Closed { what }) => assert_eq!(what, "CLOSE"),
        r => panic!("{r:?}"),
    }
    server.join().unwrap();
}
