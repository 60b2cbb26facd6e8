//! Post-copy between two network namespaces joined by a veth pair: the page
//! server runs in the "source" namespace with the full images; the task, the
//! lazy-pages daemon and a pagemap without page data are in the
//! "destination" namespace; the task checks every byte on arrival.

mod lazy_util;

use std::process::Command;

use criu_core::images::consts::pagemap_flags::LAZY;
use criu_core::images::ImageDir;
use lazy_util::*;

const SRC_ADDR: &str = "10.213.77.1";
const DST_ADDR: &str = "10.213.77.2";

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {args:?} failed");
}

/// Two namespaces and a veth pair, named after this test process; removed on drop.
struct Netns {
    src: String,
    dst: String,
}

impl Netns {
    fn new() -> Netns {
        let id = std::process::id();
        let n = Netns { src: format!("crlz-src-{id}"), dst: format!("crlz-dst-{id}") };
        let (va, vb) = (format!("crlzs{}", id % 1_000_000), format!("crlzd{}", id % 1_000_000));
        ip(&["netns", "add", &n.src]);
        ip(&["netns", "add", &n.dst]);
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
        ip(&["link", "set", &va, "netns", &n.src]);
        ip(&["link", "set", &vb, "netns", &n.dst]);
        for (ns, dev, addr) in [(&n.src, &va, SRC_ADDR), (&n.dst, &vb, DST_ADDR)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        n
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace destroys its end of the veth pair (and so both).
        for ns in [&self.src, &self.dst] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
fn post_copy_between_two_network_namespaces() {
    let net = Netns::new();
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let sock = dst.path().join("lazy.sock");
    let size = 32 << 20;
    let mut k = Kid::spawn_in(Some(&net.dst), "check", size, 0x6300_0000_0000, &sock);
    // Source: the memory. Destination: the pagemap only (LAZY, no PRESENT).
    let src_images = ImageDir::open_unchecked(src.path());
    k.write_images(&src_images);
    let dst_images = ImageDir::open_unchecked(dst.path());
    k.write_images_flagged(&dst_images, LAZY);
    finish_images(&dst_images);
    let port = free_port().to_string();
    let mut srv = criu_rs_in(
        Some(&net.src),
        &["page-server", "-D", src.path().to_str().unwrap(), "--address", SRC_ADDR, "--port", &port],
    );
    wait_port_in(Some(&net.src), port.parse().unwrap(), &mut srv);
    // Without --page-server the destination has no data to serve: refused.
    let (st, _, err) = criu_rs(&["lazy-pages", "-D", dst.path().to_str().unwrap(), "--tasks", "1"]).finish();
    assert!(!st.success() && err.contains("are not in the images"), "{err}");
    let mut d = criu_rs_in(
        Some(&net.dst),
        &[
            "lazy-pages", "-D", dst.path().to_str().unwrap(), "--page-server", "--address", SRC_ADDR, "--port", &port,
            "--lazy-socket", sock.to_str().unwrap(), "--tasks", "1",
        ],
    );
    wait_for(&sock, &mut d);
    k.go();
    let (st, out) = k.wait();
    assert!(st.success(), "the task found wrong memory: {st}\n{out}");
    let (st, out, err) = d.finish();
    assert!(st.success(), "{out}\n{err}");
    let (st, out, err) = srv.finish();
    assert!(st.success(), "{out}\n{err}");
    assert!(out.contains(&format!("{} pages sent", size / 4096 - 1)), "{out}");
}
