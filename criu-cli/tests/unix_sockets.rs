//! Unix sockets across a checkpoint (issue 13): `tests/programs/unixsk.c`
//! holds pairs of every type with queued data, listeners (path and
//! abstract) with an accepted and a pending connection, a datagram server,
//! a socket with options, a half shut-down pair and a child at the other
//! end of a pair; after a dump and a restore it checks all of it from the
//! inside. Also: `crit` decodes every image, a failed or `--leave-running`
//! dump loses no queued byte, an outside peer is refused by name unless
//! `--ext-unix-sk`, and descriptors in flight (`SCM_RIGHTS`) come back
//! with their messages (a unix socket in flight is refused by name).

mod common;

use common::*;
use std::path::Path;

/// A test's directories (the program's socket files are in `work`).
fn dirs(name: &str) -> Dirs {
    Dirs::new(name)
}

/// Starts unixsk in its own session with `extra` arguments; returns it once
/// it waits for SIGUSR1.
fn start(d: &Dirs, extra: &[&str]) -> Program {
    start_in(d, extra, false)
}

/// [`start`], in a network namespace of its own when `netns` (`unshare -n`
/// execs the program, which keeps the pid).
fn start_in(d: &Dirs, extra: &[&str], netns: bool) -> Program {
    let _ = std::fs::remove_file(&d.result);
    let exe = compile("unixsk");
    let mut cmd = if netns {
        let mut c = std::process::Command::new("unshare");
        c.arg("-n").arg(exe);
        c
    } else {
        std::process::Command::new(exe)
    };
    cmd.arg(&d.work).arg(&d.result).args(extra).stderr(common::procs::program_stderr());
    in_own_session(&mut cmd);
    let p = Program::start_cmd(cmd);
    wait_all_suspended(&[p.pid()]);
    let child = p.int("child");
    wait_until("the child blocked in read()", PATIENCE, || blocked_in(child, child) == Some(libc::SYS_read as u64));
    p
}

/// Runs the program's self-check; returns the report.
fn trigger(d: &Dirs, held: &Held) -> String {
    d.trigger(held)
}

/// Every image of `dir` decodes with crit.
fn crit_reads_everything(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "img") && !p.file_name().unwrap().to_string_lossy().starts_with("pages-") {
            crit_decode(&p);
        }
    }
}

#[test]
fn unixsk_checks_pass_without_checkpoint_and_can_fail() {
    let d = dirs("nockpt");
    let p = start(&d, &[]);
    let held = Held::open(p.pid()).unwrap();
    let report = trigger(&d, &held);
    assert_all_ok("unixsk without checkpoint", &report);
    for name in ["dgram-2", "stream-queue", "seqpacket-3", "lpath-pending-accepted", "lpath-accepted-name", "labs-new-connection",
                 "dsrv-2", "opt-rcvlowat", "shut-eof", "shut-epipe", "child-pong"] {
        assert!(report.contains(&format!("ok {name}\n")), "check {name} did not run:\n{report}");
    }
    drop(p);
}

#[test]
fn unix_sockets_come_back_with_queues_names_options_and_peers() {
    let d = dirs("restore");
    let mut p = start(&d, &[]);
    let pid = p.pid();
    dump_ok(pid, &d.images, &[]);
    p.reap();
    wait_pid_gone(p.int("child"));
    crit_reads_everything(&d.images);
    let files = crit_decode(&d.images.join("files.img"));
    let unix = files["entries"].as_array().unwrap().iter().filter(|e| e["type"] == "UNIXSK").count();
    assert!(unix >= 20, "{unix} unix sockets in files.img");
    // The F_SETOWN owner of the options socket is recorded.
    let owned = files["entries"].as_array().unwrap().iter().filter(|e| e["type"] == "UNIXSK" && jnum(&e["usk"]["fown"]["pid"]) == pid as u64);
    assert_eq!(owned.count(), 1, "no unix socket owned by {pid} in files.img");
    let queues = crit_decode(&d.images.join("sk-queues.img"));
    assert!(queues["entries"].as_array().unwrap().len() >= 10, "{queues}");
    let held = restore_detached(&d.images, pid);
    let report = trigger(&d, &held);
    assert_all_ok("unixsk after restore", &report);
}

#[test]
fn sockets_of_a_task_in_another_network_namespace() {
    let d = dirs("netns");
    let mut p = start_in(&d, &[], true);
    let pid = p.pid();
    let ns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_ne!(ns(pid), ns(std::process::id() as i32), "unshare -n gave no namespace of its own");
    dump_ok(pid, &d.images, &[]);
    p.reap();
    wait_pid_gone(p.int("child"));
    // Restored in criu-rs's namespace (network namespaces are not restored).
    let held = restore_detached(&d.images, pid);
    let report = trigger(&d, &held);
    assert_all_ok("unixsk from another network namespace", &report);
}

#[test]
fn a_leave_running_or_failed_dump_loses_no_queued_byte() {
    let d = dirs("keep");
    let p = start(&d, &[]);
    let pid = p.pid();
    let out = criu_rs()
        .args(["dump", "-t", &pid.to_string(), "-D"])
        .arg(&d.images)
        .env("CRIU_RS_FAIL_AT", "before-write")
        .output()
        .unwrap();
    assert!(!out.status.success() && text(&out.stderr).contains("forced failure"), "{}", text(&out.stderr));
    dump_ok(pid, &d.images, &["--leave-running"]);
    let held = Held::open(pid).unwrap();
    let report = trigger(&d, &held);
    assert_all_ok("unixsk after a failed and a --leave-running dump", &report);
    drop(p);
}

#[test]
fn an_outside_peer_is_refused_by_name_unless_ext_unix_sk() {
    let d = dirs("ext");
    let server_path = d.work.join("outside.sock");
    let server = std::os::unix::net::UnixDatagram::bind(&server_path).unwrap();
    let arg = format!("ext={}", server_path.display());
    let mut p = start(&d, &[&arg]);
    let pid = p.pid();
    let out = dump(pid, &d.images, &[]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "dumped with an outside peer");
    assert!(err.contains("outside.sock") && err.contains("--ext-unix-sk"), "{err}");
    assert!(!d.images.join("inventory.img").exists());
    dump_ok(pid, &d.images, &["--ext-unix-sk"]);
    p.reap();
    wait_pid_gone(p.int("child"));
    crit_reads_everything(&d.images);
    // The outside peer must be allowed at restore too.
    let out = restore(&d.images, &["-d"]);
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains("--ext-unix-sk"), "{err}");
    assert!(!alive(pid), "a refused restore left pid {pid} behind");
    let pidfile = d.images.with_extension("pid");
    let out = restore(&d.images, &["-d", "--ext-unix-sk", "--pidfile", pidfile.to_str().unwrap()]);
    let held = Held::open(pid).unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = trigger(&d, &held);
    assert_all_ok("unixsk with an outside peer", &report);
    server.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 64];
    let n = server.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"restored");
}

#[test]
fn descriptors_in_flight_come_back_with_their_messages() {
    let d = dirs("scm");
    let mut p = start(&d, &["scm"]);
    let pid = p.pid();
    dump_ok(pid, &d.images, &[]);
    p.reap();
    wait_pid_gone(p.int("child"));
    crit_reads_everything(&d.images);
    // Each message names what is in flight with it (CRIU's scm_entry) by
    // the id of a files.img entry.
    let files = crit_decode(&d.images.join("files.img"));
    let ids: Vec<u64> = files["entries"].as_array().unwrap().iter().map(|e| jnum(&e["id"])).collect();
    let queues = crit_decode(&d.images.join("sk-queues.img"));
    let mut rights: Vec<usize> = Vec::new();
    for e in queues["entries"].as_array().unwrap() {
        let Some(scm) = e["scm"].as_array() else { continue };
        for s in scm {
            assert_eq!(jnum(&s["type"]), libc::SCM_RIGHTS as u64, "{s}");
            let r = s["rights"].as_array().unwrap();
            assert!(r.iter().all(|id| ids.contains(&jnum(id))), "{s} names a file not in files.img");
            rights.push(r.len());
        }
    }
    rights.sort();
    assert_eq!(rights, [1, 1, 2], "{queues}");
    let held = restore_detached(&d.images, pid);
    let report = trigger(&d, &held);
    assert_all_ok("unixsk with descriptors in flight", &report);
    for name in ["scm-rights", "scm-two", "scm-shared-offset", "scm-eventfd", "scm-stream", "scm-stream-after"] {
        assert!(report.contains(&format!("ok {name}\n")), "check {name} did not run:\n{report}");
    }
}

#[test]
fn a_unix_socket_in_flight_is_refused_by_name_and_stays_queued() {
    let d = dirs("scmsock");
    let p = start(&d, &["scmsock"]);
    let pid = p.pid();
    let out = dump(pid, &d.images, &[]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "dumped a unix socket in flight");
    assert!(err.contains("a unix socket (SCM_RIGHTS in flight)"), "{err}");
    let held = Held::open(pid).unwrap();
    let report = trigger(&d, &held);
    assert_all_ok("unixsk after a refused dump", &report);
    assert!(report.contains("ok scm-socket\n"), "{report}");
    drop(p);
}
