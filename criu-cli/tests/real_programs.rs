//! Real programs (issue 13), dumped, killed, restored and checked from
//! outside as a user would: a node HTTP server (epoll sets, eventfds,
//! pipes, a listening TCP socket) keeps its request counter, a JVM running
//! an HTTP server and a counting loop (unix, TCP, epoll, eventfd, dozens of
//! threads) answers and keeps counting, PostgreSQL (a postmaster tree of
//! another user with SysV and POSIX shared memory, unix and TCP listeners)
//! answers queries and keeps its data, `python3 -m http.server` serves a
//! file.
//!
//! The node server keeps a client connected through the checkpoint (an
//! established connection to a peer outside the tree, `--tcp-established`);
//! every server is dumped and restored with that option, since a client
//! that just left may leave a half-closed connection behind.
//!
//! The same programs go between CRIU 4.2 and criu-rs both ways when CRIU is
//! built at `/tmp/upstream-criu` (`$CRIU_BIN`): CRIU restores criu-rs's
//! dumps and criu-rs restores CRIU's. Those tests are `#[ignore]`d (CI does
//! not build CRIU): `cargo test -p criu-cli --test real_programs -- --ignored`.
//!
//! `cargo xtask setup` installs node, the JDK, curl and PostgreSQL; a
//! missing one fails the test.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Spawns `prog ARGS` in `work`, in a session of its own, output to
/// `work/log`.
fn server(work: &Path, prog: &str, args: &[&str]) -> Proc {
    let log = std::fs::File::create(work.join("log")).unwrap();
    let mut cmd = Command::new(prog);
    cmd.args(args).current_dir(work).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
    in_own_session(&mut cmd);
    Proc::from(cmd.spawn().unwrap_or_else(|e| panic!("running {prog} (cargo xtask setup installs it): {e}")))
}

/// The body of `http://127.0.0.1:PORT/PATH`, as curl gets it.
fn get(port: u16, path: &str) -> String {
    let out = Command::new("curl").args(["-sS", "--max-time", "60", &format!("http://127.0.0.1:{port}/{path}")]).output().expect("curl");
    assert!(out.status.success(), "curl :{port}/{path}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Who dumps or restores.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Tool {
    CriuRs,
    /// CRIU 4.2.
    Criu,
}

/// CRIU's binary; the tests that need it are `#[ignore]`d and fail here
/// when run where it is not built.
fn upstream_criu() -> PathBuf {
    let bin = std::env::var_os("CRIU_BIN").map_or_else(|| PathBuf::from("/tmp/upstream-criu/criu/criu"), PathBuf::from);
    assert!(bin.exists(), "CRIU is not built at {} (build it with ../shared/tools/upstream-criu.sh)", bin.display());
    bin
}

/// Dumps the tree of `pid` with `tool` (which kills it).
fn dump_with(tool: Tool, pid: i32, images: &Path, extra: &[&str]) {
    match tool {
        Tool::CriuRs => dump_ok(pid, images, extra),
        Tool::Criu => {
            let out = Command::new(upstream_criu())
                .args(["dump", "-v4", "-o", "dump.log", "-t", &pid.to_string(), "-D"])
                .arg(images)
                .args(extra)
                .output()
                .unwrap();
            let log = std::fs::read_to_string(images.join("dump.log")).unwrap_or_default();
            assert!(out.status.success(), "CRIU dump of {pid} failed: {}\n{}", text(&out.stderr), tail(&log));
        }
    }
}

/// Restores `images` with `tool`, detached; the restored `pid`, held.
fn restore_with(tool: Tool, images: &Path, pid: i32, extra: &[&str]) -> Held {
    match tool {
        Tool::CriuRs => restore_detached_with(images, pid, extra),
        Tool::Criu => {
            let pidfile = images.join("restored.pid");
            let out = Command::new(upstream_criu())
                .args(["restore", "-d", "-v4", "-o", "restore.log", "--pidfile"])
                .arg(&pidfile)
                .arg("-D")
                .arg(images)
                .args(extra)
                .output()
                .unwrap();
            let held = Held::open(pid);
            let log = std::fs::read_to_string(images.join("restore.log")).unwrap_or_default();
            assert!(out.status.success(), "CRIU restore failed: {}\n{}", text(&out.stderr), tail(&log));
            let got: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
            assert_eq!(got, pid, "restored with another pid");
            held.unwrap_or_else(|e| panic!("restored pid {pid} is not there: {e}"))
        }
    }
}

/// The last lines of a log, for a failure message.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// What the servers' dumps and restores are given: the connection of a
/// client that just left may still be open at the server, half closed
/// (CLOSE_WAIT until the server reads the end of it), and is dumped and
/// restored as such, as a user checkpointing a server would ask.
const TCP: &[&str] = &["--tcp-established"];

/// Dumps the server `child` (our child) with `by`, reaps it, restores it
/// with `then`.
fn dump_and_restore(child: &mut Proc, images: &Path, by: Tool, then: Tool) -> Held {
    let pid = child.pid() as i32;
    dump_with(by, pid, images, TCP);
    child.wait();
    wait_pid_gone(pid);
    restore_with(then, images, pid, TCP)
}

// ------------------------------------------------------------------ node

const NODE_SERVER: &str = r#"
const http = require('http');
let hits = 0;
const server = http.createServer((req, res) => {
  hits++;
  res.end(`hits=${hits} pid=${process.pid}\n`);
});
// Keep-alive connections stay open however long the checkpoint takes.
server.keepAliveTimeout = 0;
server.listen(+process.argv[2], '127.0.0.1');
"#;

/// One request on a kept-alive connection: the body of the answer.
fn get_on(conn: &mut std::net::TcpStream) -> String {
    use std::io::{Read, Write};
    conn.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        conn.read_exact(&mut b).unwrap_or_else(|e| panic!("reading an answer on the kept-alive connection: {e} (got {:?})", text(&head)));
        head.push(b[0]);
    }
    let head = text(&head).to_lowercase();
    let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or_else(|| panic!("no length in {head}"));
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).unwrap();
    text(&body)
}

/// A node HTTP server counting its requests, dumped by `by` and restored
/// by `then`: it answers on its port with the next count, from the same
/// process.
fn node_server_keeps_its_counter(name: &str, by: Tool, then: Tool) {
    let work = scratch(name);
    std::fs::write(work.join("server.js"), NODE_SERVER).unwrap();
    let port = free_port();
    let mut child = server(&work, "node", &["server.js", &port.to_string()]);
    let pid = child.pid() as i32;
    wait_port(port, &mut child);
    assert_eq!(get(port, ""), format!("hits=1 pid={pid}\n"));
    // A client that stays connected through the checkpoint: its
    // connection is dumped and restored established (--tcp-established),
    // and locked while the server is down.
    let mut kept = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    kept.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(get_on(&mut kept), format!("hits=2 pid={pid}\n"));
    let kinds: Vec<String> = fd_kinds(pid).into_iter().map(|(_, k)| k).collect();
    for k in ["anon_inode:[eventpoll]", "anon_inode:[eventfd]", "socket:"] {
        assert!(kinds.iter().any(|x| x.starts_with(k)), "node holds no {k}: {kinds:?}");
    }
    let images = work.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let held = dump_and_restore(&mut child, &images, by, then);
    assert_eq!(get(port, ""), format!("hits=3 pid={pid}\n"));
    assert_eq!(get_on(&mut kept), format!("hits=4 pid={pid}\n"), "the kept-alive connection");
    assert_eq!(get(port, ""), format!("hits=5 pid={pid}\n"));
    drop(held);
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn node_http_server_keeps_its_counter() {
    node_server_keeps_its_counter("node", Tool::CriuRs, Tool::CriuRs);
}

#[test]
#[ignore = "needs upstream CRIU 4.2 (CRIU_BIN, default /tmp/upstream-criu/criu/criu): cargo test -p criu-cli --test real_programs -- --ignored"]
fn criu_restores_our_dump_of_node() {
    upstream_criu();
    node_server_keeps_its_counter("node-to-criu", Tool::CriuRs, Tool::Criu);
}

#[test]
#[ignore = "needs upstream CRIU 4.2 (CRIU_BIN, default /tmp/upstream-criu/criu/criu): cargo test -p criu-cli --test real_programs -- --ignored"]
fn we_restore_criu_dump_of_node() {
    upstream_criu();
    node_server_keeps_its_counter("node-from-criu", Tool::Criu, Tool::CriuRs);
}

// ------------------------------------------------------------------ python

/// `python3 -m http.server` between criu-rs and CRIU: `by` dumps,
/// `then` restores; it serves the same file after.
fn python_server_answers(name: &str, by: Tool, then: Tool) {
    let work = scratch(name);
    std::fs::write(work.join("hello.txt"), "hello from before the dump\n").unwrap();
    let port = free_port();
    let mut child = server(&work, "/usr/bin/python3", &["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1"]);
    wait_port(port, &mut child);
    assert_eq!(get(port, "hello.txt"), "hello from before the dump\n");
    let images = work.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let held = dump_and_restore(&mut child, &images, by, then);
    assert_eq!(get(port, "hello.txt"), "hello from before the dump\n");
    drop(held);
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn python_http_server_answers_after_restore() {
    python_server_answers("py", Tool::CriuRs, Tool::CriuRs);
}

#[test]
#[ignore = "needs upstream CRIU 4.2 (CRIU_BIN, default /tmp/upstream-criu/criu/criu): cargo test -p criu-cli --test real_programs -- --ignored"]
fn criu_restores_our_dump_of_python_http_server() {
    upstream_criu();
    python_server_answers("py-to-criu", Tool::CriuRs, Tool::Criu);
}

#[test]
#[ignore = "needs upstream CRIU 4.2 (CRIU_BIN, default /tmp/upstream-criu/criu/criu): cargo test -p criu-cli --test real_programs -- --ignored"]
fn we_restore_criu_dump_of_python_http_server() {
    upstream_criu();
    python_server_answers("py-from-criu", Tool::Criu, Tool::CriuRs);
}

// ------------------------------------------------------------------ JVM

const JVM_SERVER: &str = r#"
import com.sun.net.httpserver.HttpServer;
import java.io.FileWriter;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.util.concurrent.atomic.AtomicLong;

public class Srv {
    public static void main(String[] args) throws Exception {
        AtomicLong hits = new AtomicLong();
        HttpServer s = HttpServer.create(new InetSocketAddress("127.0.0.1", Integer.parseInt(args[1])), 8);
        s.createContext("/", ex -> {
            byte[] b = ("hits=" + hits.incrementAndGet() + "\n").getBytes();
            ex.sendResponseHeaders(200, b.length);
            try (OutputStream o = ex.getResponseBody()) { o.write(b); }
        });
        s.start();
        long n = 0;
        try (FileWriter out = new FileWriter(args[0], true)) {
            while (true) {
                n++;
                out.write(n + "\n");
                out.flush();
                Thread.sleep(20);
            }
        }
    }
}
"#;

/// The numbers the JVM's loop wrote so far.
fn counts(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// Waits until the loop wrote a number at least `n`.
fn wait_count(path: &Path, n: u64, limit: Duration) -> Vec<u64> {
    let t = Instant::now();
    loop {
        let c = counts(path);
        if c.last().is_some_and(|&l| l >= n) {
            return c;
        }
        assert!(t.elapsed() < limit, "the loop did not reach {n} in {limit:?}: last {:?}", c.last());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A JVM serving HTTP and counting, dumped by `by` and restored by
/// `then`: it answers with the next hit count and its loop goes on from
/// where it stopped.
fn jvm_server_answers_and_counts(name: &str, by: Tool, then: Tool) {
    let work = scratch(name);
    std::fs::write(work.join("Srv.java"), JVM_SERVER).unwrap();
    let out = work.join("counts.txt");
    let port = free_port();
    // -XX:-UsePerfData: no /tmp/hsperfdata_USER/PID mapped, a file any
    // other JVM starting meanwhile deletes as stale once the dumped JVM is
    // gone (what CRIU's users are told to do too).
    let mut child = server(&work, "java", &["-Xmx64m", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData", "Srv.java", out.to_str().unwrap(), &port.to_string()]);
    let pid = child.pid() as i32;
    // Compiling Srv.java in the JVM takes a while on a busy machine.
    wait_count(&out, 10, PATIENCE * 2);
    wait_port(port, &mut child);
    assert_eq!(get(port, ""), "hits=1\n");
    let kinds: Vec<String> = fd_kinds(pid).into_iter().map(|(_, k)| k).collect();
    for k in ["anon_inode:[eventpoll]", "socket:"] {
        assert!(kinds.iter().any(|x| x.starts_with(k)), "the JVM holds no {k}: {kinds:?}");
    }
    let images = work.join("images");
    std::fs::create_dir_all(&images).unwrap();
    dump_with(by, pid, &images, TCP);
    child.wait();
    wait_pid_gone(pid);
    let before = counts(&out);
    let held = restore_with(then, &images, pid, TCP);
    let last = *before.last().unwrap();
    let after = wait_count(&out, last + 20, PATIENCE);
    assert_eq!(after[before.len()], last + 1, "the restored loop did not continue from {last}");
    assert!(after.windows(2).all(|w| w[1] == w[0] + 1), "numbers skipped or repeated");
    assert_eq!(get(port, ""), "hits=2\n");
    assert!(alive(held.pid), "the restored JVM is gone");
    drop(held);
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn jvm_http_server_answers_and_keeps_counting() {
    jvm_server_answers_and_counts("jvm-http", Tool::CriuRs, Tool::CriuRs);
}

#[test]
#[ignore = "needs upstream CRIU 4.2 (CRIU_BIN, default /tmp/upstream-criu/criu/criu): cargo test -p criu-cli --test real_programs -- --ignored"]
fn criu_restores_our_dump_of_a_jvm() {
    upstream_criu();
    jvm_server_answers_and_counts("jvm-to-criu", Tool::CriuRs, Tool::Criu);
}

#[test]
#[ignore = "needs upstream CRIU 4.2 (CRIU_BIN, default /tmp/upstream-criu/criu/criu): cargo test -p criu-cli --test real_programs -- --ignored"]
fn we_restore_criu_dump_of_a_jvm() {
    upstream_criu();
    jvm_server_answers_and_counts("jvm-from-criu", Tool::Criu, Tool::CriuRs);
}

// ------------------------------------------------------------------ PostgreSQL

/// The directory of PostgreSQL's server programs (`initdb`, `pg_ctl`,
/// `postgres`): where `initdb` is on PATH, else Debian's
/// `/usr/lib/postgresql/VERSION/bin`.
fn pg_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).find(|d| d.join("initdb").is_file()));
    if let Some(d) = on_path {
        return d;
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.filter_map(|e| Some(e.ok()?.path().join("bin"))).filter(|b| b.join("initdb").is_file()).collect())
        .unwrap_or_default();
    found.sort();
    found.pop().expect("PostgreSQL's initdb (cargo xtask setup installs it)")
}

/// A PostgreSQL cluster of user `postgres` in a scratch directory; its
/// postmaster (and so its whole tree) is killed on drop, and its SysV
/// segment removed.
struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl Cluster {
    fn init(name: &str) -> Cluster {
        let bin = pg_bin();
        let dir = scratch(name);
        let port = free_port();
        let c = Cluster { bin, dir, port };
        std::os::unix::fs::chown(&c.dir, Some(uid_of("postgres")), None).unwrap();
        c.as_postgres(&["initdb", "-D", "data", "-A", "trust", "-U", "postgres"]);
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c shared_buffers=16MB -c huge_pages=off", c.port, c.dir.display());
        c.as_postgres(&["pg_ctl", "-D", "data", "-o", &opts, "-l", "pg.log", "-w", "-t", "120", "start"]);
        c
    }

    /// Runs the server program `args[0]` as `postgres` in the cluster's
    /// directory, asserted to succeed.
    fn as_postgres(&self, args: &[&str]) {
        let out = Command::new("setpriv")
            .args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"])
            .arg(self.bin.join(args[0]))
            .args(&args[1..])
            .current_dir(&self.dir)
            .env("HOME", &self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}{}", text(&out.stdout), text(&out.stderr));
    }

    /// The postmaster's pid (first line of postmaster.pid).
    fn postmaster(&self) -> i32 {
        let s = std::fs::read_to_string(self.dir.join("data/postmaster.pid")).unwrap();
        s.lines().next().unwrap().trim().parse().unwrap()
    }

    /// `psql -c SQL` over TCP; its unaligned output.
    fn sql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-qtAX", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("psql (cargo xtask setup installs it)");
        assert!(out.status.success(), "psql -c {sql:?}: {}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    }

    /// The same over the unix socket in the cluster's directory.
    fn sql_unix(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-h", self.dir.to_str().unwrap(), "-p", &self.port.to_string(), "-U", "postgres", "-qtAX", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "psql (unix socket) -c {sql:?}: {}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let Ok(s) = std::fs::read_to_string(self.dir.join("data/postmaster.pid")) else { return };
        let mut lines = s.lines();
        let pid: i32 = lines.next().and_then(|l| l.trim().parse().ok()).unwrap_or(0);
        // A fast shutdown ends the children and removes the segment.
        if pid > 0 && alive(pid) {
            let _ = Command::new("setpriv")
                .args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"])
                .arg(self.bin.join("pg_ctl"))
                .args(["-D", "data", "-m", "immediate", "-w", "-t", "60", "stop"])
                .current_dir(&self.dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // Line 7 of postmaster.pid: "KEY SHMID" of its SysV segment.
        if let Some(shmid) = s.lines().nth(6).and_then(|l| l.split_whitespace().nth(1)).and_then(|i| i.parse::<i32>().ok()) {
            // SAFETY: IPC_RMID on a segment id takes no buffer.
            unsafe { libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut()) };
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The uid of user `name` (from /etc/passwd).
fn uid_of(name: &str) -> u32 {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f[0] == name)
        .and_then(|f| f[2].parse().ok())
        .unwrap_or_else(|| panic!("no user {name}"))
}

/// The postmaster's long-lived helper processes (checkpointer, writers,
/// launchers), not the backends and workers that come and go.
fn helpers_of(pm: i32) -> Vec<i32> {
    const HELPERS: [&str; 5] = ["checkpointer", "background writer", "walwriter", "autovacuum launcher", "logical replication launcher"];
    children_of(pm)
        .into_iter()
        .filter(|c| {
            let cmd = std::fs::read_to_string(format!("/proc/{c}/cmdline")).unwrap_or_default();
            HELPERS.iter().any(|h| cmd.trim_end_matches(['\0', ' ']) == format!("postgres: {h}"))
        })
        .collect()
}

/// PostgreSQL (`initdb`, `pg_ctl start`, user `postgres`): the postmaster
/// tree (postmaster, checkpointer, writers, launchers: other-user tasks in
/// sessions of their own, SysV and POSIX shared memory, TCP and unix
/// listeners) is dumped, killed and restored; `psql` then finds the rows
/// written before the dump and writes more, over TCP and the unix socket.
#[test]
fn postgres_answers_and_keeps_its_data() {
    let pg = Cluster::init("pg");
    pg.sql("create table t(x int)");
    pg.sql("insert into t select generate_series(1, 1000)");
    assert_eq!(pg.sql("select count(*), sum(x) from t"), "1000|500500");
    let pm = pg.postmaster();
    let tree = helpers_of(pm);
    assert!(tree.len() >= 3, "postmaster {pm} has children {tree:?}");
    let images = pg.dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    dump_ok(pm, &images, &[]);
    wait_pid_gone(pm);
    for &c in &tree {
        wait_pid_gone(c);
    }
    let held = restore_detached(&images, pm);
    assert_eq!(helpers_of(pm), tree, "the postmaster's helper processes");
    assert_eq!(pg.sql("select count(*), sum(x) from t"), "1000|500500");
    pg.sql("insert into t values (5000)");
    assert_eq!(pg.sql_unix("select count(*), sum(x) from t"), "1001|505500");
    // A new backend forks from the restored postmaster for each psql.
    assert_eq!(pg.sql("select 1"), "1");
    // Stopped by pg_ctl while held (its drop kills only what is left).
    drop(pg);
    drop(held);
}
