//! Post-copy between two network namespaces joined by a veth pair: the page
//! server runs in the "source" namespace with the full images; the task, the
//! lazy-pages daemon and a pagemap without page data are in the
//! "destination" namespace; the task checks every byte on arrival.

mod common;

use common::*;

use criu_core::images::consts::pagemap_flags::LAZY;
use criu_core::images::ImageDir;

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
    let mut srv = spawn_criu_rs_in(
        Some(&net.src),
        &["page-server", "-D", src.path().to_str().unwrap(), "--address", SRC_ADDR, "--port", &port],
    );
    wait_port_in(Some(&net.src), port.parse().unwrap(), &mut srv);
    // Without --page-server the destination has no data to serve: refused.
    let (st, _, err) = spawn_criu_rs(&["lazy-pages", "-D", dst.path().to_str().unwrap(), "--tasks", "1"]).finish();
    assert!(!st.success() && err.contains("are not in the images"), "{err}");
    let mut d = spawn_criu_rs_in(
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
