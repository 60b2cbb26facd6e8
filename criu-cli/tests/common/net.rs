//! Networking for the page-server and post-copy tests: free ports,
//! waiting for a listener or a socket file, and two network namespaces
//! joined by a veth pair (two "hosts").

use super::procs::Proc;
use super::PATIENCE;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Waits until `path` exists (a daemon's socket).
pub fn wait_for(path: &Path, daemon: &mut Proc) {
    super::wait_until(&format!("{} to appear", path.display()), PATIENCE, || {
        if let Some(st) = daemon.try_wait() {
            panic!("daemon exited early: {st}");
        }
        path.exists()
    });
}

/// A free TCP port on loopback, below the ephemeral range
/// (`ip_local_port_range`): a server's port stays free while the server is
/// dumped and not restored yet, and no client's connect (the tests run in
/// parallel) may take it as its own port meanwhile, which would make the
/// restore's bind fail.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next().and_then(|v| v.parse::<u32>().ok()))
        .unwrap_or(32768);
    let (base, span) = (10_000u32, low.saturating_sub(10_000).max(1000));
    // Spread test processes apart (by pid), then walk on.
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..span {
        let port = base + (start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span);
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    panic!("no free port in {base}..{}", base + span)
}

/// Waits until something listens on `port` (IPv4 or IPv6).
pub fn wait_port(port: u16, p: &mut Proc) {
    wait_port_in(None, port, p)
}

/// Waits until something listens on `port` in network namespace `netns`.
pub fn wait_port_in(netns: Option<&str>, port: u16, p: &mut Proc) {
    let t0 = Instant::now();
    // Probing with a connect would use up the one-session server: watch
    // /proc/net/tcp for the listening socket instead.
    let hex = format!(":{port:04X} ");
    loop {
        // IPv6 sockets (a JVM's, even bound to 127.0.0.1) are in tcp6.
        let tcp = match netns {
            None => ["/proc/net/tcp", "/proc/net/tcp6"].map(|f| std::fs::read_to_string(f).unwrap_or_default()).concat(),
            Some(ns) => Command::new("ip")
                .args(["netns", "exec", ns, "cat", "/proc/net/tcp", "/proc/net/tcp6"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default(),
        };
        if tcp.lines().any(|l| l.contains(&hex) && l.split_whitespace().nth(3) == Some("0A")) {
            return;
        }
        if let Some(st) = p.try_wait() {
            panic!("page server exited early: {st}");
        }
        assert!(t0.elapsed() < PATIENCE, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------- two network namespaces (post-copy between "hosts") ----------

/// The source namespace's address.
pub const SRC_ADDR: &str = "10.213.77.1";
/// The destination namespace's address.
pub const DST_ADDR: &str = "10.213.77.2";

/// Runs `ip ARGS`, asserting success.
pub fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {args:?} failed");
}

/// Two namespaces and a veth pair, named after this test process; removed on drop.
pub struct Netns {
    pub src: String,
    pub dst: String,
}

impl Netns {
    /// Creates both namespaces and the veth pair between them.
    pub fn new() -> Netns {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let id = std::process::id() % 100_000 * 10 + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 10;
        let n = Netns { src: format!("crlz-src-{id}"), dst: format!("crlz-dst-{id}") };
        let (va, vb) = (format!("crlzs{id}"), format!("crlzd{id}"));
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
