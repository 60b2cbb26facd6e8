//! Shared by the lazy-pages tests: the C stand-in for a restored task
//! (`lazy_child.c`), the images describing its memory, and guards that kill
//! the processes a test started.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use criu_core::images::consts::pagemap_flags::{LAZY, PRESENT};
use criu_core::images::pb::{InventoryEntry, Lsmtype, TaskKobjIdsEntry};
use criu_core::images::{ImageDir, PAGE_SIZE};
use criu_core::pageserver::store::{write_pagemap, PageRun};

/// The word the child expects at address `a` (see `lazy_child.c`).
pub fn pattern(a: u64) -> u64 {
    a.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(0x123_4567)
}

/// Fills `buf` (image address `at`) with the pattern.
pub fn fill(at: u64, buf: &mut [u8]) {
    for (i, w) in buf.chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&pattern(at + 8 * i as u64).to_le_bytes());
    }
}

/// Compiles `lazy_child.c` once per test binary.
pub fn child_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("lazy_child-{}", std::process::id()));
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lazy_child.c");
        let st = Command::new("gcc").args(["-O2", "-Wall", "-o"]).arg(&out).arg(&src).status().expect("run gcc");
        assert!(st.success(), "gcc failed on {}", src.display());
        out
    })
}

/// A running stand-in task; killed on drop.
pub struct Kid {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub out: BufReader<ChildStdout>,
    pub base: u64,
    pub size: u64,
}

impl Kid {
    /// Starts the child mapping `size` bytes at `base`, and waits for "ready".
    pub fn spawn(mode: &str, size: u64, base: u64, socket: &Path) -> Kid {
        Self::spawn_in(None, mode, size, base, socket)
    }

    /// As [`Kid::spawn`], inside network namespace `netns` when given.
    pub fn spawn_in(netns: Option<&str>, mode: &str, size: u64, base: u64, socket: &Path) -> Kid {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(child_binary());
                c
            }
            None => Command::new(child_binary()),
        };
        let mut child = cmd
            .args([mode, &size.to_string(), &format!("{base:x}")])
            .arg(socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn lazy_child");
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut k = Kid { child, stdin, out, base, size };
        assert_eq!(k.line(), "ready");
        k
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Next line of output ("" at end).
    pub fn line(&mut self) -> String {
        let mut s = String::new();
        self.out.read_line(&mut s).expect("read child output");
        s.trim_end().to_string()
    }

    /// Lets the child go on (hand-over, or the second half in "halt").
    /// A child already gone is not an error here: its status tells.
    pub fn go(&mut self) {
        let w = self.stdin.as_mut().expect("stdin");
        let _ = w.write_all(b"go\n").and_then(|_| w.flush());
    }

    /// Waits for the end: exit status and the rest of the output.
    pub fn wait(&mut self) -> (ExitStatus, String) {
        let mut rest = String::new();
        loop {
            let l = self.line();
            if l.is_empty() {
                break;
            }
            rest.push_str(&l);
            rest.push('\n');
        }
        (self.child.wait().expect("wait child"), rest)
    }

    /// Writes this child's images into `dir` (see [`Region::write`]).
    pub fn write_images(&self, dir: &ImageDir) {
        Kid::image_writer(self.pid(), self.base, self.size).write(dir)
    }

    /// As [`Kid::write_images`] with entry flags `flags` (without PRESENT:
    /// pagemap only, as a `dump --lazy-pages` leaves it).
    pub fn write_images_flagged(&self, dir: &ImageDir, flags: u32) {
        Region { flags, ..Kid::image_writer(self.pid(), self.base, self.size) }.write(dir)
    }

    /// The images of a patterned region of process `pid`.
    pub fn image_writer(pid: u32, base: u64, size: u64) -> Region {
        Region { pid, base, size, flags: LAZY | PRESENT }
    }
}

/// A patterned region of a process, as images.
pub struct Region {
    pub pid: u32,
    pub base: u64,
    pub size: u64,
    pub flags: u32,
}

impl Region {
    /// Two entries with `flags` covering all but the last page (a hole the
    /// daemon fills with zeroes).
    pub fn write(&self, dir: &ImageDir) {
        let first = (1 << 20).min(self.size / 2) / PAGE_SIZE;
        let total = self.size / PAGE_SIZE - 1;
        let runs = [
            PageRun { vaddr: self.base, nr_pages: first, flags: self.flags },
            PageRun { vaddr: self.base + first * PAGE_SIZE, nr_pages: total - first, flags: self.flags },
        ];
        write_pagemap(dir, self.pid, self.pid, &runs, &mut fill).expect("write pagemap");
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes `dir` a complete image set (inventory) for the daemon.
pub fn finish_images(dir: &ImageDir) {
    let ids = TaskKobjIdsEntry { vm_id: Some(1), files_id: Some(1), fs_id: Some(1), sighand_id: Some(1), ..Default::default() };
    dir.write_inventory(&InventoryEntry::for_dump(ids, Lsmtype::NoLsm)).expect("write inventory");
}

/// A process started by a test (daemon, page server); killed on drop.
pub struct Proc(Option<Child>);

impl Proc {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("process already waited for")
    }

    pub fn pid(&mut self) -> u32 {
        self.child().id()
    }

    /// Whether it has exited (reaping it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child().try_wait().ok().flatten()
    }

    /// Waits for the end; returns status, stdout, stderr.
    pub fn finish(mut self) -> (ExitStatus, String, String) {
        let child = self.0.take().expect("process already waited for");
        let out = child.wait_with_output().expect("wait");
        (out.status, String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `criu-rs ARGS` with piped output.
pub fn criu_rs(args: &[&str]) -> Proc {
    criu_rs_in(None, args)
}

/// Starts `criu-rs ARGS` in network namespace `netns` when given.
pub fn criu_rs_in(netns: Option<&str>, args: &[&str]) -> Proc {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_criu-rs")]);
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_criu-rs")),
    };
    Proc(Some(
        cmd
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn criu-rs"),
    ))
}

/// Waits until `path` exists (a daemon's socket).
pub fn wait_for(path: &Path, daemon: &mut Proc) {
    let t0 = Instant::now();
    while !path.exists() {
        if let Some(st) = daemon.try_wait() {
            panic!("daemon exited early: {st}");
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind").port()
}

/// Waits until something listens on `port`.
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
        let tcp = match netns {
            None => std::fs::read_to_string("/proc/net/tcp").unwrap_or_default(),
            Some(ns) => Command::new("ip")
                .args(["netns", "exec", ns, "cat", "/proc/net/tcp"])
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
        assert!(t0.elapsed() < Duration::from_secs(20), "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
