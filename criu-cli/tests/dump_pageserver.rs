//! `criu-rs dump --page-server` and `criu-rs dump --lazy-pages` over
//! loopback, on live test programs: the page server's images are those of a
//! local dump, and with them copied in the dump restores (the program checks
//! itself); a connection broken mid-dump, or any other failure, leaves the
//! process running as it was; a process tree goes through the page server
//! too (each task's pages image under the server's numbering, from 0x10001
//! as CRIU's, never one of the local shared memory images: the two
//! directories merge into one dump that restores and checks itself); the
//! protocol is CRIU's (`page_server_iov`), so criu-rs talks to CRIU here; a lazy dump holds the memory of lazy areas
//! (images with `LAZY` entries and no data for them, refused by a plain
//! restore), frees the pid, serves exactly the dumped bytes, and exits when
//! its client goes away.

mod common;

use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criu_core::images::consts::pagemap_flags::{LAZY, PRESENT};
use criu_core::images::PAGE_SIZE;
use criu_core::pageserver::client::PageClient;
use criu_core::pageserver::proto::{Cmd, Iov};
use criu_core::pageserver::server::FIRST_PAGES_ID;

/// Pagemap entries (vaddr, pages, flags) as crit decodes them.
fn pagemap(path: &Path) -> Vec<(u64, u64, u32)> {
    let v = crit_decode(path);
    let e = v["entries"].as_array().unwrap();
    e[1..].iter().map(|e| (jnum(&e["vaddr"]), jnum(&e["nr_pages"]), jnum(&e["flags"]) as u32)).collect()
}

/// The data of every page of a local dump, by address.
fn local_pages(dir: &Path, pid: i32) -> std::collections::BTreeMap<u64, Vec<u8>> {
    let data = std::fs::read(dir.join("pages-1.img")).unwrap();
    let mut off = 0usize;
    let mut out = std::collections::BTreeMap::new();
    for (v, n, f) in pagemap(&dir.join(format!("pagemap-{pid}.img"))) {
        // A plain dump flags what a lazy restore may leave to the daemon
        // LAZY too; every page has its data.
        assert!(f == PRESENT || f == PRESENT | LAZY, "flags {f:#x}");
        for i in 0..n {
            out.insert(v + i * PAGE_SIZE, data[off..off + PAGE_SIZE as usize].to_vec());
            off += PAGE_SIZE as usize;
        }
    }
    assert_eq!(off, data.len());
    out
}

fn page_server(dir: &Path) -> (Proc, u16) {
    let port = free_port();
    let mut p = spawn_criu_rs(&["page-server", "-D", dir.to_str().unwrap(), "--address", "127.0.0.1", "--port", &port.to_string()]);
    wait_port(port, &mut p);
    (p, port)
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

/// Starts `exe args` on CPU 0 only: the kernel rewrites the rseq area's
/// cpu id when a task migrates, which would make two dumps differ.
fn start_pinned(exe: &Path, args: &[&str]) -> Program {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(exe);
    cmd.args(args).stderr(common::procs::program_stderr());
    // SAFETY: sched_setaffinity on the child itself between fork and exec;
    // it only reads the set on our stack and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    Program::start_cmd(cmd)
}

#[test]
fn page_server_images_are_those_of_a_local_dump() {
    let mut p = start_pinned(&compile("bigmem"), &["24"]);
    let pid = p.pid();
    // The first dump of a fresh process sees its stack before the read
    // restarted once; compare two later dumps.
    dump_ok(pid, &scratch("ps-warmup"), &["-R", "-j"]);
    let remote = scratch("ps-remote");
    let served = scratch("ps-served");
    let (srv, port) = page_server(&served);
    dump_ok(pid, &remote, &["-R", "-j", "--page-server", "--address", "127.0.0.1", "--port", &port.to_string()]);
    let (st, out, err) = srv.finish();
    assert!(st.success(), "page server: {out}\n{err}");
    assert!(out.contains("pages received"), "{out}");
    let local = scratch("ps-local");
    dump_ok(pid, &local, &["-R", "-j"]);

    // The server numbers pages images from 0x10001, as CRIU's; the
    // entries and the bytes are the local dump's.
    let pm = format!("pagemap-{pid}.img");
    let served_pages = format!("pages-{FIRST_PAGES_ID}.img");
    assert_eq!(file_names(&served), [pm.clone(), served_pages.clone()]);
    assert!(!remote.join("pages-1.img").exists() && !remote.join(&pm).exists(), "pages written locally too");
    assert_eq!(pagemap(&served.join(&pm)), pagemap(&local.join(&pm)), "pagemap entries");
    assert_eq!(pagemap_pages(&served.join(&pm)).0, u64::from(FIRST_PAGES_ID));
    assert!(std::fs::read(served.join(&served_pages)).unwrap() == std::fs::read(local.join("pages-1.img")).unwrap(), "pages differ from the local dump's");
    for f in [&pm, &served_pages] {
        std::fs::copy(served.join(f), remote.join(f)).unwrap();
    }
    // The 24 MiB run is one entry, as locally.
    assert!(pagemap(&remote.join(&pm)).iter().any(|e| e.1 >= 24 << 8), "{:?}", pagemap(&remote.join(&pm)));
    let not_pages = |d: &Path| file_names(d).into_iter().filter(|f| !f.starts_with("pages-")).collect::<Vec<_>>();
    assert_eq!(not_pages(&remote), not_pages(&local));
    for f in not_pages(&remote) {
        crit_decode(&remote.join(f));
    }
    assert_eq!(p.finish().trim(), "OK");
}

/// The pages image a pagemap names and the bytes its PRESENT entries
/// carry, as crit decodes it.
fn pagemap_pages(path: &Path) -> (u64, u64) {
    let v = crit_decode(path);
    let id = jnum(&v["entries"][0]["pages_id"]);
    let present = pagemap(path).iter().filter(|e| e.2 & PRESENT != 0).map(|e| e.1 * PAGE_SIZE).sum();
    (id, present)
}

#[test]
fn page_server_dumps_a_tree_that_restores() {
    tree_through_page_server("ps-tree", false);
}

#[test]
fn page_server_dumps_a_tree_into_the_images_directory() {
    tree_through_page_server("ps-tree-same", true);
}

/// Dumps `tests/programs/tree.c` with its pages sent to a page server
/// writing into a directory of its own (checked against the local images,
/// then merged in) or, `same_dir`, into the images directory itself;
/// restores it and has it check itself.
fn tree_through_page_server(name: &str, same_dir: bool) {
    let work = scratch(&format!("{name}-work"));
    let result = work.with_extension("result");
    let _ = std::fs::remove_file(&result);
    let mut root = Program::spawn("tree", &[&work, &result]);
    let pids = [root.pid(), root.int("a"), root.int("b"), root.int("c")];
    let zombie = root.int("z");
    let held: Vec<Held> = pids[1..].iter().map(|&p| Held::open(p).unwrap()).collect();
    wait_all_suspended(&pids);

    let images = scratch(&format!("{name}-images"));
    // A stale pagemap of a child (an earlier local dump): the dump removes
    // it, the server's takes its place.
    std::fs::write(images.join(format!("pagemap-{}.img", pids[2])), b"stale").unwrap();
    let served = if same_dir { images.clone() } else { scratch(&format!("{name}-served")) };
    let (srv, port) = page_server(&served);
    dump_ok(pids[0], &images, &["--page-server", "--address", "127.0.0.1", "--port", &port.to_string()]);
    let (st, out, err) = srv.finish();
    assert!(st.success(), "page server: {out}\n{err}");
    root.reap();
    for h in &held {
        assert!(h.wait_exit(PATIENCE), "the dump left tree task {} running", h.pid);
    }
    drop(held);
    for pid in pids.into_iter().chain([zombie]) {
        wait_pid_gone(pid);
    }

    // The server wrote every live task's pagemap and pages image (the
    // root's pages-1.img); the dump the rest, among them the shared
    // memory's pagemap and pages under ids of their own.
    let mut from_server: Vec<String> = pids.iter().map(|p| format!("pagemap-{p}.img")).collect();
    let mut ids = Vec::new();
    for pid in pids {
        let (id, bytes) = pagemap_pages(&served.join(format!("pagemap-{pid}.img")));
        assert!(!ids.contains(&id), "pages id {id} twice");
        ids.push(id);
        let pages = format!("pages-{id}.img");
        assert_eq!(std::fs::metadata(served.join(&pages)).unwrap().len(), bytes, "{pages} against pagemap-{pid}.img");
        from_server.push(pages);
    }
    assert_eq!(ids[0], u64::from(FIRST_PAGES_ID), "the server's numbering, as CRIU's");
    from_server.sort();
    let local: Vec<String> = file_names(&images).into_iter().filter(|f| !(same_dir && from_server.contains(f))).collect();
    if !same_dir {
        assert_eq!(file_names(&served), from_server);
        assert!(!local.iter().any(|f| from_server.contains(f)), "written on both sides: {local:?} {from_server:?}");
    }
    let shmem: Vec<&String> = local.iter().filter(|f| f.starts_with("pagemap-shmem-")).collect();
    assert!(!shmem.is_empty(), "the tree's shared memory: {local:?}");
    let mut local_pages = Vec::new();
    for f in shmem {
        let (id, bytes) = pagemap_pages(&images.join(f));
        assert!(!ids.contains(&id), "{f} names the served pages-{id}.img");
        assert_eq!(std::fs::metadata(images.join(format!("pages-{id}.img"))).unwrap().len(), bytes, "{f}");
        local_pages.push(format!("pages-{id}.img"));
    }
    local_pages.sort();
    // Nothing else of pages locally: no task's pagemap, no pages image no
    // pagemap names.
    let others: Vec<&String> = local.iter().filter(|f| f.starts_with("pages-") || f.starts_with("pagemap-") && !f.starts_with("pagemap-shmem-")).collect();
    assert_eq!(others, local_pages.iter().collect::<Vec<_>>());

    // Merged, the two directories are one dump.
    if !same_dir {
        for f in &from_server {
            std::fs::copy(served.join(f), images.join(f)).unwrap();
        }
    }
    for f in file_names(&images).iter().filter(|f| !f.starts_with("pages-")) {
        crit_decode(&images.join(f));
    }
    let restored_root = restore_detached(&images, pids[0]);
    let restored: Vec<Held> = pids[1..].iter().map(|&p| Held::open(p).unwrap_or_else(|e| panic!("restored tree lacks {p}: {e}"))).collect();
    wait_all_suspended(&pids);
    restored_root.signal(libc::SIGUSR1).unwrap();
    let report = wait_result(&result);
    assert!(restored_root.wait_exit(PATIENCE), "the restored root did not exit after its self-check");
    assert_all_ok("tree dumped through the page server", &report);
    drop(restored);
}

/// A page server (CRIU's protocol) that answers OPEN2 and takes `puts`
/// entries with pages, then drops the connection. Returns its port and the
/// number of entries with pages it saw.
fn breaking_server(puts: usize) -> (u16, std::thread::JoinHandle<usize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut seen = 0;
        loop {
            let mut b = [0u8; 32];
            s.read_exact(&mut b).unwrap();
            let iov = Iov::decode(&b).unwrap();
            if iov.cmd == Cmd::Open2 {
                s.write_all(&[0]).unwrap();
            }
            if iov.cmd == Cmd::AddF && iov.flags & PRESENT != 0 {
                let mut data = vec![0u8; iov.len() as usize];
                s.read_exact(&mut data).unwrap();
                seen += 1;
            }
            if seen > puts {
                return seen;
            }
        }
    });
    (port, t)
}

/// Waits until the process sleeps in its read again, as it was.
fn still_running(p: &mut Program, maps_before: &str, what: &str) {
    assert_eq!(p.maps(), maps_before, "{what}: the address space changed");
    wait_state(p.pid(), 'S');
}

/// [`still_running`], then its self-check.
fn still_fine(p: &mut Program, maps_before: &str, what: &str) {
    still_running(p, maps_before, what);
    assert_eq!(p.finish().trim(), "OK", "{what}: self-check");
}

#[test]
fn broken_page_server_connection_leaves_the_process_running() {
    let exe = compile("dumpee");
    let tmp = scratch("ps-broken-files");
    let mut p = Program::start(&exe, &["32", "2", tmp.to_str().unwrap()]);
    let dir = scratch("ps-broken");
    // A complete earlier dump must not pass for the failed one.
    dump_ok(p.pid(), &dir, &["-R", "-j"]);
    let maps_before = p.maps();
    let (port, server) = breaking_server(3);
    let out = dump(p.pid(), &dir, &["-j", "--page-server", "--address", "127.0.0.1", "--port", &port.to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the dump should fail");
    assert!(err.contains("page server"), "{err}");
    assert_eq!(server.join().unwrap(), 4, "the connection broke after 3 entries with pages");
    assert!(!dir.join("inventory.img").exists(), "inventory written by a failed dump");
    still_running(&mut p, &maps_before, "broken connection");

    // A real page server, the dump failing after its first pages: the
    // server fails too (its images are not whole).
    let served = scratch("ps-broken-served");
    let (srv, port) = page_server(&served);
    let maps_before = p.maps();
    let out = criu_rs()
        .args(["dump", "-j", "-t", &p.pid().to_string(), "-D", dir.to_str().unwrap(), "--page-server"])
        .args(["--address", "127.0.0.1", "--port", &port.to_string()])
        .env("CRIU_RS_FAIL_AT", "mid-send")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("forced failure at mid-send"));
    let (st, sout, serr) = srv.finish();
    // "unfinished", or a reset or broken pipe when the dump exited with
    // replies in flight.
    assert!(!st.success() && serr.contains("page server"), "page server: {st} {sout} {serr}");
    assert!(!dir.join("inventory.img").exists());
    still_fine(&mut p, &maps_before, "mid-send");

    // Nobody listening: refused before the process is touched.
    let mut p = Program::start(&exe, &["8", "1", tmp.to_str().unwrap()]);
    let maps_before = p.maps();
    let port = free_port();
    let out = dump(p.pid(), &dir, &["-j", "--page-server", "--address", "127.0.0.1", "--port", &port.to_string()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("page server") && err.contains("refused"), "{err}");
    still_fine(&mut p, &maps_before, "no server");
}

/// `criu-rs dump --lazy-pages` running: its first stdout line says the
/// images are complete; killed on drop.
struct LazySource {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
    port: u16,
}

impl LazySource {
    fn start(pid: i32, dir: &Path) -> LazySource {
        let port = free_port();
        let mut child = criu_rs()
            .args(["dump", "-j", "-t", &pid.to_string(), "-D", dir.to_str().unwrap(), "--lazy-pages"])
            .args(["--address", "127.0.0.1", "--port", &port.to_string(), "--lazy-timeout", "60"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        if !line.contains("held for lazy restore") {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("lazy dump said {line:?}: {err}");
        }
        LazySource { child, out, port }
    }

    /// Waits for it to exit; its status and the rest of its stdout.
    fn wait(&mut self) -> (std::process::ExitStatus, String) {
        let mut rest = String::new();
        self.out.read_to_string(&mut rest).unwrap();
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st, rest);
            }
            assert!(t.elapsed() < PATIENCE, "the lazy source did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl LazySource {
    /// A client of it; on failure, says how the source is doing.
    fn client(&mut self) -> PageClient {
        match PageClient::connect(("127.0.0.1", self.port)) {
            Ok(c) => c,
            Err(e) => {
                let _ = self.child.kill();
                let mut err = String::new();
                self.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                panic!("connecting to the lazy source on {}: {e}; it said: {err}", self.port);
            }
        }
    }
}

impl Drop for LazySource {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The process was killed by the dump and its pid is free.
fn gone(mut p: Program) {
    let st = p.child.wait().unwrap();
    assert!(!st.success(), "killed by the dump: {st}");
    assert!(!Path::new(&format!("/proc/{}", p.pid())).exists());
    // Reaped: its Drop must not kill the pid, which may be someone else's now.
    std::mem::forget(p);
}

#[test]
fn lazy_dump_holds_the_memory_and_serves_it() {
    let exe = compile("dumpee");
    let tmp = scratch("lazy-files");
    let p = start_pinned(&exe, &["16", "2", tmp.to_str().unwrap()]);
    let pid = p.pid();
    let special = p.num("special");
    let (p_mem, p_pages) = (p.num("mem"), p.num("pages"));
    dump_ok(pid, &scratch("lazy-warmup"), &["-R", "-j"]);
    let local = scratch("lazy-local");
    dump_ok(pid, &local, &["-R", "-j"]);
    let want = local_pages(&local, pid);

    let dir = scratch("lazy-images");
    let mut src = LazySource::start(pid, &dir);
    gone(p);

    // Every dumped page is in the pagemap, as locally; those of private
    // anonymous areas are LAZY without data, the others in pages-1.img.
    let entries = pagemap(&dir.join(format!("pagemap-{pid}.img")));
    let mut present = 0;
    let mut lazy = 0;
    let mut addrs = Vec::new();
    for &(v, n, f) in &entries {
        assert!(f == LAZY || f == PRESENT, "flags {f:#x}");
        if f == LAZY {
            lazy += n;
        } else {
            present += n;
        }
        addrs.extend((0..n).map(|i| v + i * PAGE_SIZE));
    }
    assert_eq!(addrs, want.keys().copied().collect::<Vec<_>>());
    assert!(lazy >= 16 << 8 >> 1, "{lazy} lazy pages");
    let locked = special + PAGE_SIZE;
    assert!(entries.iter().any(|&(v, n, f)| f == PRESENT && v <= locked && locked < v + n * PAGE_SIZE), "the mlocked page stays eager");
    assert_eq!(std::fs::metadata(dir.join("pages-1.img")).unwrap().len(), present * PAGE_SIZE);
    let stats = crit_decode(&dir.join("stats-dump"));
    assert_eq!(jnum(&stats["entries"][0]["dump"]["pages_lazy"]), lazy);
    for f in file_names(&dir).iter().filter(|f| !f.starts_with("pages-")) {
        crit_decode(&dir.join(f));
    }

    // The held pages are the dumped bytes; fetched in pieces of every size.
    let mut c = src.client();
    let mut bad = Vec::new();
    for &(v, n, _) in entries.iter().filter(|e| e.2 == LAZY) {
        let got = c.get(pid as u32, v, n * PAGE_SIZE).unwrap().to_vec();
        for i in 0..n as usize {
            let page = &got[i * PAGE_SIZE as usize..(i + 1) * PAGE_SIZE as usize];
            if page != &want[&(v + i as u64 * PAGE_SIZE)][..] {
                bad.push(v + i as u64 * PAGE_SIZE);
            }
        }
    }
    // Only the patterned area is sure to be as it was in the local dump: a
    // timer signal may have run on a stack in between.
    let (mem, mem_end) = (p_mem, p_mem + p_pages * PAGE_SIZE);
    bad.retain(|a| (mem..mem_end).contains(a));
    assert!(bad.is_empty(), "{} pages of the patterned area differ: {bad:x?}", bad.len());
    let served = entries.iter().filter(|e| e.2 == LAZY && (mem..mem_end).contains(&e.0)).map(|e| e.1).sum::<u64>();
    assert!(served > p_pages / 2, "{served} lazy pages in the patterned area");
    c.finish().unwrap();
    let (st, out) = src.wait();
    assert!(st.success(), "{st}: {out}");
    assert!(out.contains(&format!("{lazy} pages sent")), "{out}");
}

#[test]
fn lazy_source_exits_when_its_client_goes_away() {
    // A client that takes one piece and disconnects.
    let p = Program::start(&compile("bigmem"), &["8"]);
    let (pid, mem) = (p.pid(), p.num("mem"));
    let dir = scratch("lazy-drop");
    let mut src = LazySource::start(pid, &dir);
    gone(p);
    let mut c = src.client();
    let page = c.get(pid as u32, mem + 5 * PAGE_SIZE, PAGE_SIZE).unwrap();
    // bigmem's pattern: word i holds i * 0x9e3779b97f4a7c15 + 1.
    let w = (5 * PAGE_SIZE / 8).wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
    assert_eq!(&page[..8], &w.to_le_bytes());
    drop(c);
    let (st, out) = src.wait();
    assert!(st.success(), "{st}: {out}");
    assert!(out.contains("1 pages sent"), "{out}");

    // The real lazy-pages daemon: it connects, no task ever comes, it gives
    // up; the source sees it go and exits.
    let p = Program::start(&compile("bigmem"), &["8"]);
    let pid = p.pid();
    let dir = scratch("lazy-daemon");
    let mut src = LazySource::start(pid, &dir);
    gone(p);
    let d = spawn_criu_rs(&[
        "lazy-pages", "-D", dir.to_str().unwrap(), "--page-server", "--address", "127.0.0.1",
        "--port", &src.port.to_string(), "--tasks", "1", "--connect-timeout", "1",
    ]);
    let (st, out) = src.wait();
    assert!(st.success(), "{st}: {out}");
    assert!(out.contains("0 pages sent"), "{out}");
    drop(d);
}

#[test]
fn failed_lazy_dumps_leave_the_process_running() {
    let mut p = Program::start(&compile("bigmem"), &["1"]);
    let out = Command::new(env!("CARGO_BIN_EXE_criu-rs"))
        .args(["dump", "-j", "-t", &p.pid().to_string(), "-D", scratch("lazy-noport").to_str().unwrap(), "--lazy-pages"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--port"));
    // A port already taken: refused before the process is touched.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = scratch("lazy-taken");
    let out = dump(p.pid(), &dir, &["-j", "--lazy-pages", "--address", "127.0.0.1", "--port", &port]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen on"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!dir.join("inventory.img").exists());
    // A lazy dump failing late: nothing held, nothing served, the process
    // runs on.
    let out = criu_rs()
        .args(["dump", "-j", "-t", &p.pid().to_string(), "-D", dir.to_str().unwrap(), "--lazy-pages"])
        .args(["--address", "127.0.0.1", "--port", &free_port().to_string()])
        .env("CRIU_RS_FAIL_AT", "before-write")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("forced failure"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("held"));
    assert!(!dir.join("inventory.img").exists());
    assert_eq!(p.finish().trim(), "OK");
}

#[test]
fn page_server_dump_restores_with_the_served_pages() {
    let (child, log) = start_restoree(&scratch("ps-restoree"));
    let pid = child.id() as i32;
    let mut child = Proc::from(child);
    let images = scratch("ps-restoree-images");
    let served = scratch("ps-restoree-served");
    let (srv, port) = page_server(&served);
    dump_ok(pid, &images, &["--page-server", "--address", "127.0.0.1", "--port", &port.to_string()]);
    assert!(srv.finish().0.success());
    child.wait();
    wait_pid_gone(pid);
    // Without the served images the restore has no pagemap to go on.
    assert!(!restore(&images, &["-d"]).status.success());
    for f in file_names(&served) {
        std::fs::copy(served.join(&f), images.join(&f)).unwrap();
    }
    let mut restore = Proc::from(restore_cmd(&images).stderr(Stdio::piped()).spawn().unwrap());
    wait_until("the restored task to run", PATIENCE, || {
        if let Some(st) = restore.try_wait() {
            let mut err = String::new();
            restore.stderr().unwrap().read_to_string(&mut err).unwrap();
            panic!("restore ended early: {st}: {err}");
        }
        restoree_waits(pid)
    });
    let held = Held::open(pid).expect("the restored task");
    held.signal(libc::SIGUSR1).unwrap();
    let st = restore.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("OK"), "the restored program's checks: {text}");
    assert_eq!(st.code(), Some(0));
}

#[test]
fn lazy_images_are_refused_by_a_plain_restore() {
    let (child, _log) = start_restoree(&scratch("lazy-restoree"));
    let pid = child.id() as i32;
    let mut child = Proc::from(child);
    let images = scratch("lazy-restoree-images");
    let src = LazySource::start(pid, &images);
    child.wait();
    wait_pid_gone(pid);
    let before = snapshot(&images);
    let out = restore(&images, &["-d"]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("lazy"), "{err}");
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "nothing restored");
    assert_same_dir(&before, &snapshot(&images));
    drop(src);
}
