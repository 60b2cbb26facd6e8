//! The page server protocol in-process: a memory-backed store (the source
//! side of `dump --lazy-pages`) served over loopback TCP, typed refusals,
//! and a peer speaking another version.

use std::io::{Read, Write};
use std::net::TcpListener;

use criu_core::images::PAGE_SIZE;
use criu_core::pageserver::client::PageClient;
use criu_core::pageserver::proto::{Hello, Reply, Status, MAGIC};
use criu_core::pageserver::server::serve_one;
use criu_core::pageserver::store::MemStore;
use criu_core::pageserver::PageServerError;

#[test]
fn memory_store_served_over_tcp() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let data: Vec<u8> = (0..8 * PAGE_SIZE as usize).map(|i| (i * 7 / 4096) as u8 ^ i as u8).collect();
    let mut store = MemStore::new();
    store.insert(5, 0x40_0000, data.clone());
    let server = std::thread::spawn(move || serve_one(&listener, None, Some(&mut store)).map(|s| s.pages_got));
    let mut c = PageClient::connect(addr).unwrap();
    assert_eq!(c.get(5, 0x40_0000 + 2 * PAGE_SIZE, 3 * PAGE_SIZE).unwrap(), &data[2 * 4096..5 * 4096]);
    match c.get(5, 0x40_0000 + 6 * PAGE_SIZE, 4 * PAGE_SIZE) {
        Err(PageServerError::Refused { status: Status::NoData, .. }) => {}
        r => panic!("reading past the stored pages must be refused, got {r:?}"),
    }
    match c.get(6, 0x40_0000, PAGE_SIZE) {
        Err(PageServerError::Refused { status: Status::UnknownPid, .. }) => {}
        r => panic!("an unknown pid must be refused, got {r:?}"),
    }
    // The connection is still usable after refusals.
    assert_eq!(c.get(5, 0x40_0000, PAGE_SIZE).unwrap(), &data[..4096]);
    c.finish().unwrap();
    assert_eq!(server.join().unwrap().unwrap(), 4);
}

#[test]
fn other_version_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || serve_one(&listener, None, None));
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(&Hello { version: 99, role: 2 }.encode()).unwrap();
    let mut b = [0u8; 16];
    s.read_exact(&mut b).unwrap();
    assert_eq!(Reply::decode(&b).unwrap().status, Status::Version);
    assert!(matches!(server.join().unwrap(), Err(PageServerError::Version { got: 99 })));
    // And garbage is not mistaken for a peer.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || serve_one(&listener, None, None));
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut junk = [0u8; 16];
    junk[..4].copy_from_slice(&(MAGIC ^ 1).to_le_bytes());
    s.write_all(&junk).unwrap();
    assert!(matches!(server.join().unwrap(), Err(PageServerError::BadMagic(_))));
}
