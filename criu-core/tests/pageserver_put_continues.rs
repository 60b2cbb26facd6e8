//! The page server receiving a dump, in-process over loopback TCP with raw
//! requests: PUTs flagged `PUT_CONTINUES` extend the entry before them (one
//! pagemap entry however many PUTs), a continuation that does not fit is
//! refused with its data consumed, and a dump going away mid-process is an
//! error, not a whole set of images; the pipelined StreamSink gets the
//! same entries and reports a refusal at the end of the session. OPEN
//! names the pages image (the dump's numbering, several processes in one
//! session); an id of 0 or a pid or id opened before is refused.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use criu_core::images::consts::pagemap_flags::{LAZY, PRESENT};
use criu_core::images::{ImageDir, PAGE_SIZE};
use criu_core::pageserver::proto::{Cmd, Hello, Reply, Request, Role, Status, PUT_CONTINUES, VERSION};
use criu_core::pageserver::server::serve_one;
use criu_core::pageserver::store::{read_pagemap, ImagesStore, PageStore};
use criu_core::pageserver::PageServerError;

fn connect(dir: &std::path::Path) -> (TcpStream, std::thread::JoinHandle<Result<u64, PageServerError>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let images = ImageDir::open_unchecked(dir);
    let server = std::thread::spawn(move || serve_one(&listener, Some(&images), None).map(|s| s.pages_put));
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&Hello { version: VERSION, role: Role::Put as u32 }.encode()).unwrap();
    let mut b = [0u8; 16];
    s.read_exact(&mut b).unwrap();
    assert_eq!(Hello::decode(&b).unwrap().version, VERSION);
    (s, server)
}

/// The pages image id OPEN asks for in [`call`].
const OPEN_ID: u32 = 3;

fn call(s: &mut TcpStream, cmd: Cmd, flags: u32, vaddr: u64, data: &[u8]) -> Status {
    call_pid(s, cmd, 9, if cmd == Cmd::Open { OPEN_ID } else { 0 }, flags, vaddr, data)
}

fn call_pid(s: &mut TcpStream, cmd: Cmd, pid: u32, pages_id: u32, flags: u32, vaddr: u64, data: &[u8]) -> Status {
    let req = Request { cmd, flags, pid, pages_id, vaddr, nr_pages: data.len() as u64 / PAGE_SIZE };
    s.write_all(&req.encode()).unwrap();
    s.write_all(data).unwrap();
    let mut b = [0u8; 16];
    s.read_exact(&mut b).unwrap();
    Reply::decode(&b).unwrap().status
}

fn pages(n: usize, seed: u8) -> Vec<u8> {
    (0..n * PAGE_SIZE as usize).map(|i| (i / 4096) as u8 ^ seed ^ i as u8).collect()
}

#[test]
fn continued_puts_make_one_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, server) = connect(dir.path());
    let (a, b, c) = (pages(2, 1), pages(1, 2), pages(1, 3));
    let p = PAGE_SIZE;
    assert_eq!(call(&mut s, Cmd::Open, 0, 0, &[]), Status::Ok);
    // A continuation with nothing to continue.
    assert_eq!(call(&mut s, Cmd::Put, PRESENT | PUT_CONTINUES, 0x1000_0000, &c), Status::BadRequest);
    assert_eq!(call(&mut s, Cmd::Put, PRESENT, 0x1000_0000, &a), Status::Ok);
    assert_eq!(call(&mut s, Cmd::Put, PRESENT | PUT_CONTINUES, 0x1000_0000 + 2 * p, &b), Status::Ok);
    // Not adjacent, or other flags: refused, the stream stays in step.
    assert_eq!(call(&mut s, Cmd::Put, PRESENT | PUT_CONTINUES, 0x1000_0000 + 9 * p, &c), Status::BadRequest);
    assert_eq!(call(&mut s, Cmd::Put, LAZY | PRESENT | PUT_CONTINUES, 0x1000_0000 + 3 * p, &c), Status::BadRequest);
    // Adjacent but not flagged: a new entry.
    assert_eq!(call(&mut s, Cmd::Put, PRESENT, 0x1000_0000 + 3 * p, &c), Status::Ok);
    assert_eq!(call(&mut s, Cmd::Close, 0, 0, &[]), Status::Ok);
    assert_eq!(call(&mut s, Cmd::Finish, 0, 0, &[]), Status::Ok);
    assert_eq!(server.join().unwrap().unwrap(), 4);

    let images = ImageDir::open_unchecked(dir.path());
    let (id, entries) = read_pagemap(&images, 9).unwrap();
    assert_eq!(id, OPEN_ID);
    assert!(dir.path().join(format!("pages-{OPEN_ID}.img")).exists());
    let got: Vec<(u64, u64, u32)> = entries.iter().map(|e| (e.vaddr(), e.page_count(), e.flags())).collect();
    assert_eq!(got, [(0x1000_0000, 3, PRESENT), (0x1000_0000 + 3 * p, 1, PRESENT)]);
    let mut store = ImagesStore::new(images);
    let want: Vec<u8> = [a, b].concat();
    assert_eq!(store.pages(9, 0x1000_0000, 3 * p).unwrap(), &want[..]);
    assert_eq!(store.pages(9, 0x1000_0000 + 3 * p, p).unwrap(), &c[..]);
}

#[test]
fn dump_gone_mid_process_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, server) = connect(dir.path());
    assert_eq!(call(&mut s, Cmd::Open, 0, 0, &[]), Status::Ok);
    assert_eq!(call(&mut s, Cmd::Put, PRESENT, 0x1000_0000, &pages(1, 0)), Status::Ok);
    drop(s);
    match server.join().unwrap() {
        Err(PageServerError::Protocol(m)) => assert!(m.contains("unfinished"), "{m}"),
        r => panic!("a dump that went away mid-process must be an error, got {r:?}"),
    }
    // Even before its first OPEN: a put session ends with FINISH.
    let (s, server) = connect(dir.path());
    drop(s);
    match server.join().unwrap() {
        Err(PageServerError::Protocol(m)) => assert!(m.contains("without FINISH"), "{m}"),
        r => panic!("a put session without FINISH must be an error, got {r:?}"),
    }
}

#[test]
fn stream_sink_pipelines_and_reports_refusals() {
    use criu_core::pageserver::stream_sink::StreamSink;
    let serve = |dir: &std::path::Path| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let images = ImageDir::open_unchecked(dir);
        (addr, std::thread::spawn(move || serve_one(&listener, Some(&images), None).map(|s| s.pages_put)))
    };
    let dir = tempfile::tempdir().unwrap();
    let (addr, server) = serve(dir.path());
    let big = pages(2000, 7);
    let mut s = StreamSink::connect(addr).unwrap();
    s.open(9, 1).unwrap();
    // 2000 pages in two calls, the second continuing the first.
    s.put(9, 0x2000_0000, 0, &big[..1500 * 4096]).unwrap();
    s.put(9, 0x2000_0000 + 1500 * PAGE_SIZE, PUT_CONTINUES, &big[1500 * 4096..]).unwrap();
    s.put(9, 0x3000_0000, LAZY, &pages(1, 1)).unwrap();
    s.close(9).unwrap();
    s.finish().unwrap();
    assert_eq!(server.join().unwrap().unwrap(), 2001);
    let images = ImageDir::open_unchecked(dir.path());
    let (_, entries) = read_pagemap(&images, 9).unwrap();
    let got: Vec<(u64, u64, u32)> = entries.iter().map(|e| (e.vaddr(), e.page_count(), e.flags())).collect();
    assert_eq!(got, [(0x2000_0000, 2000, PRESENT), (0x3000_0000, 1, LAZY | PRESENT)]);
    assert_eq!(ImagesStore::new(images).pages(9, 0x2000_0000, 2000 * PAGE_SIZE).unwrap(), &big[..]);

    // A refused PUT (a continuation that does not fit) fails the session.
    let dir = tempfile::tempdir().unwrap();
    let (addr, server) = serve(dir.path());
    let mut s = StreamSink::connect(addr).unwrap();
    s.open(9, 1).unwrap();
    s.put(9, 0x2000_0000, 0, &pages(2, 0)).unwrap();
    s.put(9, 0x2000_0000 + 5 * PAGE_SIZE, PUT_CONTINUES, &pages(1, 0)).unwrap();
    s.close(9).unwrap();
    match s.finish() {
        Err(PageServerError::Refused { cmd: Cmd::Put, vaddr: 0x2000_5000, status: Status::BadRequest, .. }) => {}
        r => panic!("the refusal must fail the session, got {r:?}"),
    }
    // The server saw a whole, if refused, session.
    assert!(server.join().unwrap().is_ok());
}

#[test]
fn open_names_the_pages_image_and_each_pid_and_id_comes_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, server) = connect(dir.path());
    let one = pages(1, 5);
    assert_eq!(call_pid(&mut s, Cmd::Open, 10, 0, 0, 0, &[]), Status::BadRequest, "id 0");
    assert_eq!(call_pid(&mut s, Cmd::Open, 10, 4, 0, 0, &[]), Status::Ok);
    assert_eq!(call_pid(&mut s, Cmd::Open, 11, 6, 0, 0, &[]), Status::BadRequest, "one pid at a time");
    assert_eq!(call_pid(&mut s, Cmd::Put, 10, 0, PRESENT, 0x1000_0000, &one), Status::Ok);
    assert_eq!(call_pid(&mut s, Cmd::Close, 10, 0, 0, 0, &[]), Status::Ok);
    assert_eq!(call_pid(&mut s, Cmd::Open, 11, 4, 0, 0, &[]), Status::BadRequest, "id 4 again");
    assert_eq!(call_pid(&mut s, Cmd::Open, 10, 6, 0, 0, &[]), Status::BadRequest, "pid 10 again");
    assert_eq!(call_pid(&mut s, Cmd::Open, 11, 6, 0, 0, &[]), Status::Ok);
    assert_eq!(call_pid(&mut s, Cmd::Put, 11, 0, PRESENT, 0x2000_0000, &pages(2, 6)), Status::Ok);
    assert_eq!(call_pid(&mut s, Cmd::Close, 11, 0, 0, 0, &[]), Status::Ok);
    assert_eq!(call_pid(&mut s, Cmd::Finish, 0, 0, 0, 0, &[]), Status::Ok);
    assert_eq!(server.join().unwrap().unwrap(), 3);
    let images = ImageDir::open_unchecked(dir.path());
    assert_eq!(read_pagemap(&images, 10).unwrap().0, 4);
    assert_eq!(read_pagemap(&images, 11).unwrap().0, 6);
    assert_eq!(std::fs::read(dir.path().join("pages-4.img")).unwrap(), one);
    assert_eq!(std::fs::metadata(dir.path().join("pages-6.img")).unwrap().len(), 2 * PAGE_SIZE);
    assert!(!dir.path().join("pages-1.img").exists(), "the server picks no id of its own");

    // A pages id outside OPEN is malformed: the server ends the session.
    let (mut s, server) = connect(dir.path());
    let req = Request { cmd: Cmd::Close, flags: 0, pid: 10, pages_id: 4, vaddr: 0, nr_pages: 0 };
    s.write_all(&req.encode()).unwrap();
    assert!(matches!(server.join().unwrap(), Err(PageServerError::Protocol(_))));
}
