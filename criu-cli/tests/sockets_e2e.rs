//! Internet and netlink sockets end to end (issue 13).
//!
//! From inside: `tests/programs/inet_socks.c` (listeners v4/v6/v4-mapped,
//! bound and unbound TCP, UDP bound/connected/shut down, netlink, each with
//! options) and `tests/programs/tcp_conn.c` (connections between two
//! processes of the tree with bytes in flight both ways, one of them half
//! closed, and to this test, a peer outside the tree) are dumped, die, are restored and check
//! themselves. From outside: the images decode with crit, the network lock
//! holds while the tree is down (bytes the outside peer sends then arrive
//! after the restore instead of resetting the connection) and is gone
//! after; refusals name the socket; a failed or `--leave-running` dump
//! leaves every connection working.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};

/// The `files.img` entries of `type` (crit's JSON).
fn entries_of(images: &Path, ty: &str) -> Vec<serde_json::Value> {
    let files = crit_decode(&images.join("files.img"));
    files["entries"].as_array().unwrap().iter().filter(|e| e["type"] == ty).cloned().collect()
}

/// [`fd_kinds`] with socket inodes left out (a restored socket is a new one).
fn fd_shapes(pid: i32) -> Vec<(i32, String)> {
    fd_kinds(pid).into_iter().map(|(fd, k)| (fd, if k.starts_with("socket:") { "socket".into() } else { k })).collect()
}

/// The iptables/ip6tables rules of the network lock that name `port`.
fn lock_rules(port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for tool in ["iptables", "ip6tables"] {
        let Ok(o) = std::process::Command::new(tool).arg("-S").output() else { continue };
        let needle = [format!("--sport {port} "), format!("--dport {port} ")];
        out.extend(
            text(&o.stdout)
                .lines()
                .filter(|l| l.to_lowercase().contains("0xc114") && needle.iter().any(|n| l.contains(n.as_str()) || l.ends_with(n.trim_end())))
                .map(str::to_owned),
        );
    }
    out
}

/// Removes lock rules naming `port` (after a failed test: ours only).
fn drop_lock_rules(port: u16) {
    for tool in ["iptables", "ip6tables"] {
        let Ok(o) = std::process::Command::new(tool).arg("-S").output() else { continue };
        for rule in text(&o.stdout).lines().filter(|l| l.to_lowercase().contains("0xc114") && (l.contains(&format!("--sport {port} ")) || l.contains(&format!("--dport {port} ")))) {
            let args: Vec<&str> = rule.split_whitespace().collect();
            let mut cmd = std::process::Command::new(tool);
            cmd.arg("-w").arg("-D").args(&args[1..]);
            let _ = cmd.output();
        }
    }
}

/// Removes, when dropped, the lock rules of every connection in an images
/// directory: a test that fails, or restores on purpose in vain, leaves no
/// rule behind.
struct LockCleanup(PathBuf);

impl Drop for LockCleanup {
    fn drop(&mut self) {
        let Ok(out) = std::process::Command::new("crit").args(["decode", "-i"]).arg(self.0.join("files.img")).output() else { return };
        let Ok(files) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else { return };
        for e in files["entries"].as_array().into_iter().flatten().filter(|e| e["type"] == "INETSK") {
            if e["isk"]["dst_port"].as_u64().unwrap_or(0) != 0 {
                drop_lock_rules(e["isk"]["src_port"].as_u64().unwrap_or(0) as u16);
            }
        }
    }
}

// ---------------------------------------------------------- listeners etc.

struct Socks {
    work: PathBuf,
    result: PathBuf,
}

fn socks(name: &str) -> (Socks, Program) {
    let work = scratch(&format!("{name}-work"));
    let result = work.join("result");
    let p = Program::spawn("inet_socks", &[&work, &result]);
    wait_all_suspended(&[p.pid()]);
    (Socks { work, result }, p)
}

fn socks_check(s: &Socks, held: &Held, what: &str) {
    held.signal(libc::SIGUSR1).unwrap();
    let report = wait_result(&s.result);
    assert!(held.wait_exit(PATIENCE), "{what}: did not exit after its self-check");
    assert_all_ok(what, &report);
}

#[test]
fn inet_socks_checks_pass_without_checkpoint() {
    let (s, p) = socks("socks-nockpt");
    let held = Held::open(p.pid()).unwrap();
    socks_check(&s, &held, "inet_socks without checkpoint");
    let _ = s.work;
}

#[test]
fn listeners_bound_udp_and_netlink_sockets_come_back() {
    let (s, mut p) = socks("socks-restore");
    let pid = p.pid();
    let images = scratch("socks-images");
    let fds = fd_shapes(pid);
    dump_ok(pid, &images, &[]);
    p.reap();
    wait_pid_gone(pid);

    // What crit reads: the listeners with their backlogs, the netlink socket.
    let inet = entries_of(&images, "INETSK");
    assert_eq!(inet.len(), 8, "{inet:?}");
    let l4 = inet.iter().find(|e| e["isk"]["src_port"] == p.int("l4") && e["isk"]["family"] == libc::AF_INET).expect("l4 entry");
    assert_eq!((jnum(&l4["isk"]["state"]), jnum(&l4["isk"]["backlog"])), (10, 7), "listening, backlog 7: {l4}");
    assert!(l4["isk"]["opts"]["so_keepalive"].as_bool().unwrap(), "{l4}");
    let l6 = inet.iter().find(|e| e["isk"]["src_port"] == p.int("l6")).expect("l6 entry");
    assert_eq!((jnum(&l6["isk"]["family"]), l6["isk"]["v6only"].as_bool()), (libc::AF_INET6 as u64, Some(true)), "{l6}");
    let nl = entries_of(&images, "NETLINKSK");
    assert_eq!(nl.len(), 1, "{nl:?}");
    let pk = entries_of(&images, "PACKETSK");
    assert_eq!(pk.len(), 1, "{pk:?}");
    assert!(pk[0]["psk"]["aux_data"].as_bool().unwrap(), "{pk:?}");
    let before = snapshot(&images);

    let held = restore_detached(&images, pid);
    wait_all_suspended(&[pid]);
    assert_eq!(fd_shapes(pid), fds, "fds differ from before the dump");
    socks_check(&s, &held, "restored inet_socks");
    assert_same_dir(&before, &snapshot(&images));
}

#[test]
fn pending_connections_are_refused_by_name_or_skipped() {
    let (s, mut p) = socks("socks-pending");
    let pid = p.pid();
    let images = scratch("socks-pending-images");
    let port = p.int("l4") as u16;
    // Connected by the kernel, never accepted.
    let _waiting = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let out = dump(pid, &images, &[]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "dump with a connection not accepted went through");
    assert!(err.contains(&format!("TCP listener 127.0.0.1:{port}")) && err.contains("not accepted yet") && err.contains("--skip-in-flight"), "{err}");
    wait_all_suspended(&[pid]);
    dump_ok(pid, &images, &["--skip-in-flight"]);
    p.reap();
    wait_pid_gone(pid);
    let held = restore_detached(&images, pid);
    socks_check(&s, &held, "restored inet_socks (pending connection skipped)");
}

// ------------------------------------------------------ TCP connections

/// tcp_conn.c and this test as its outside peer.
struct Conn {
    result: PathBuf,
    prog: Program,
    /// The test's end of the connection to R.
    outside: TcpStream,
    /// R's port on that connection.
    r_port: u16,
}

fn conn(name: &str) -> Conn {
    let work = scratch(&format!("{name}-work"));
    let result = work.join("result");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    let mut cmd = std::process::Command::new(compile("tcp_conn"));
    cmd.args([work.as_os_str(), result.as_os_str(), port.as_ref()]).stdin(std::process::Stdio::null()).stderr(common::procs::program_stderr());
    let child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
    let (mut outside, peer) = l.accept().unwrap();
    outside.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut hello = [0u8; 12];
    outside.read_exact(&mut hello).unwrap();
    assert_eq!(&hello, b"hello from R");
    outside.write_all(b"to R ").unwrap();
    let prog = Program::from_child(child, false);
    wait_all_suspended(&[prog.pid(), prog.int("a")]);
    Conn { result, prog, outside, r_port: peer.port() }
}

/// Lets R check itself (it passes SIGUSR1 on to A) and plays the outside
/// peer's part: the rest of "to R before" if not sent yet, then "R after
/// restore" in, "test after restore" out.
fn conn_check(c: &mut Conn, held: &Held, rest_sent: bool, what: &str) {
    if !rest_sent {
        c.outside.write_all(b"before").unwrap();
    }
    held.signal(libc::SIGUSR1).unwrap();
    let mut got = [0u8; 15];
    c.outside.read_exact(&mut got).unwrap_or_else(|e| panic!("{what}: reading from R: {e}"));
    assert_eq!(&got, b"R after restore", "{what}");
    c.outside.write_all(b"test after restore").unwrap();
    let report = wait_result(&c.result);
    assert!(held.wait_exit(PATIENCE), "{what}: R did not exit after its self-check");
    assert_all_ok(what, &report);
}

#[test]
fn tcp_conn_checks_pass_without_checkpoint() {
    let mut c = conn("conn-nockpt");
    let held = Held::open(c.prog.pid()).unwrap();
    conn_check(&mut c, &held, false, "tcp_conn without checkpoint");
}

#[test]
fn established_connections_carry_on_with_bytes_in_flight() {
    let mut c = conn("conn-restore");
    let (pid, a) = (c.prog.pid(), c.prog.int("a"));
    let images = scratch("conn-images");
    let _cleanup = LockCleanup(images.clone());
    dump_ok(pid, &images, &["--tcp-established"]);
    c.prog.reap();
    wait_pid_gone(pid);
    wait_pid_gone(a);
    let port = c.r_port;
    // While the tree is down its connections are locked: what the outside
    // peer sends now is dropped (no reset) and retransmitted later.
    assert_eq!(lock_rules(port).len(), 2, "lock rules: {:?}", lock_rules(port));
    c.outside.write_all(b"before").unwrap();

    // Five connection ends (two v4, two v6, one to us) and a half-closed
    // pair (FIN_WAIT2 = 5 at A, CLOSE_WAIT = 8 at R), each with its stream
    // image; crit reads them.
    let inet = entries_of(&images, "INETSK");
    let est: Vec<&serde_json::Value> = inet.iter().filter(|e| e["isk"]["state"] == 1).collect();
    assert_eq!(est.len(), 5, "{inet:?}");
    let half: Vec<&serde_json::Value> = inet.iter().filter(|e| e["isk"]["state"] == 5 || e["isk"]["state"] == 8).collect();
    assert_eq!(half.len(), 2, "{inet:?}");
    let mut queued = 0;
    for e in est.iter().chain(&half) {
        let ino = jnum(&e["isk"]["ino"]);
        let s = crit_decode(&images.join(format!("tcp-stream-{ino:x}.img")));
        queued += jnum(&s["entries"][0]["inq_len"]) + jnum(&s["entries"][0]["outq_len"]);
    }
    assert!(queued >= c.prog.num("stream"), "queued bytes {queued} < the stream");
    let before = snapshot(&images);

    let held = restore_detached_with(&images, pid, &["--tcp-established"]);
    let r = lock_rules(port);
    assert!(r.is_empty(), "lock rules left after the restore: {r:?}");
    conn_check(&mut c, &held, true, "restored tcp_conn");
    assert_same_dir(&before, &snapshot(&images));
}

#[test]
fn connections_are_refused_without_tcp_established_and_keep_working() {
    let mut c = conn("conn-refused");
    let pid = c.prog.pid();
    let images = scratch("conn-refused-images");
    let out = dump(pid, &images, &[]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "dump of established connections without --tcp-established went through");
    assert!(err.contains("TCP connection") && err.contains("--tcp-established"), "{err}");
    assert!(!images.join("inventory.img").exists());
    let held = Held::open(pid).unwrap();
    conn_check(&mut c, &held, false, "tcp_conn after a refused dump");
}

#[test]
fn failed_and_leave_running_dumps_leave_connections_working() {
    let mut c = conn("conn-failed");
    let pid = c.prog.pid();
    let images = scratch("conn-failed-images");
    dump_failing_at(pid, &images, "before-write", &["--tcp-established"]);
    assert!(lock_rules(c.r_port).is_empty(), "lock left by a failed dump: {:?}", lock_rules(c.r_port));
    dump_ok(pid, &images, &["--tcp-established", "-R"]);
    assert!(lock_rules(c.r_port).is_empty(), "lock left by a --leave-running dump: {:?}", lock_rules(c.r_port));
    let held = Held::open(pid).unwrap();
    conn_check(&mut c, &held, false, "tcp_conn after a failed and a --leave-running dump");
}

#[test]
fn corrupt_stream_images_are_refused_and_nothing_is_left() {
    let mut c = conn("conn-corrupt");
    let (pid, a) = (c.prog.pid(), c.prog.int("a"));
    let images = scratch("conn-corrupt-images");
    let _cleanup = LockCleanup(images.clone());
    dump_ok(pid, &images, &["--tcp-established"]);
    c.prog.reap();
    wait_pid_gone(pid);
    wait_pid_gone(a);
    // Without --tcp-established restore refuses, by name.
    let out = restore(&images, &["-d"]);
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains("--tcp-established"), "{err}");
    // A queue shorter than its entry says.
    let stream = std::fs::read_dir(&images).unwrap().filter_map(|e| e.ok().map(|e| e.path())).find(|p| p.to_string_lossy().contains("tcp-stream-")).unwrap();
    let len = std::fs::metadata(&stream).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&stream).unwrap().set_len(len - 1).unwrap();
    let out = restore(&images, &["-d", "--tcp-established"]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "a truncated stream image was restored");
    assert!(err.contains(&stream.file_name().unwrap().to_string_lossy().to_string()), "{err}");
    assert!(!alive(pid) && !alive(a), "a task of the failed restore is left");
}
