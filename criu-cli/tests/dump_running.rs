//! `criu-rs dump` on live test programs: --leave-running leaves them intact,
//! forced failures leave them as they were, the default kills them.

mod common;

use common::*;

const FAILPOINTS: [&str; 5] = ["after-freeze", "mid-inject", "after-inject", "mid-memory", "before-write"];

fn start_dumpee(name: &str, mib: &str, threads: &str) -> (Program, std::path::PathBuf) {
    let exe = compile("dumpee");
    let tmp = scratch(&format!("{name}-files"));
    let p = Program::start(&exe, &[mib, threads, tmp.to_str().unwrap()]);
    (p, tmp)
}

#[test]
fn leave_running_keeps_the_process_intact() {
    let (mut p, _tmp) = start_dumpee("leave-running", "16", "2");
    let dir = scratch("leave-running");
    let maps_before = p.maps();
    let out = dump(p.pid(), &dir, &["-R", "-j"]);
    assert!(out.status.success(), "dump failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(p.maps(), maps_before, "the address space changed");
    assert!(dir.join("pages-1.img").metadata().unwrap().len() > 0);
    let report = p.finish();
    assert_eq!(report.trim(), "OK", "self-check after the dump: {report}");
    assert!(p.child.wait().unwrap().success());
}

#[test]
fn forced_failures_leave_the_process_as_it_was() {
    for point in FAILPOINTS {
        let (mut p, _tmp) = start_dumpee(&format!("fail-{point}"), "8", "2");
        let dir = scratch(&format!("fail-{point}"));
        // A complete older dump in the same directory must not survive as
        // "complete" when the new one fails.
        let good = dump(p.pid(), &dir, &["-R", "-j"]);
        assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stderr));
        assert!(dir.join("inventory.img").exists());
        let maps_before = p.maps();
        dump_failing_at(p.pid(), &dir, point, &["-j"]);
        assert_eq!(p.maps(), maps_before, "{point}: the address space changed");
        // It goes back to sleep in its read (after restarting the syscall).
        wait_state(p.pid(), 'S');
        let report = p.finish();
        assert_eq!(report.trim(), "OK", "{point}: self-check: {report}");
    }
}

#[test]
fn default_dump_kills_the_process() {
    let (mut p, _tmp) = start_dumpee("kill", "4", "1");
    let dir = scratch("kill");
    let out = dump(p.pid(), &dir, &["-j"]);
    assert!(out.status.success(), "dump failed: {}", String::from_utf8_lossy(&out.stderr));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(p.child.wait().unwrap().signal(), Some(libc::SIGKILL));
}

#[test]
fn unwritable_images_dir_leaves_the_process_running() {
    let (mut p, _tmp) = start_dumpee("bad-dir", "4", "1");
    let file = scratch("bad-dir").join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    for dir in [file.clone(), file.join("sub"), "/proc/1/nonexistent".into()] {
        let out = dump(p.pid(), &dir, &["-j"]);
        assert!(!out.status.success(), "dump into {} should fail", dir.display());
        assert!(String::from_utf8_lossy(&out.stderr).contains("images directory"), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(p.finish().trim(), "OK");
}

/// A small tmpfs makes the pages image hit ENOSPC in the middle of memory.
#[test]
fn full_disk_leaves_the_process_running() {
    let (mut p, _tmp) = start_dumpee("enospc", "8", "1");
    let dir = scratch("enospc");
    let target = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    // SAFETY: mount(2) with valid NUL-terminated strings; the mount is ours and removed below.
    let r = unsafe {
        libc::mount(c"tmpfs".as_ptr(), target.as_ptr(), c"tmpfs".as_ptr(), 0, c"size=1m".as_ptr().cast())
    };
    assert_eq!(r, 0, "mounting a tmpfs: {}", std::io::Error::last_os_error());
    let maps_before = p.maps();
    let out = dump(p.pid(), &dir, &["-j"]);
    // SAFETY: unmounting the tmpfs mounted above.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "dump into a full tmpfs should fail");
    assert!(err.contains("No space left"), "{err}");
    assert_eq!(p.maps(), maps_before);
    assert_eq!(p.finish().trim(), "OK");
}

#[test]
fn shell_job_is_required_for_a_foreign_session() {
    let (mut p, _tmp) = start_dumpee("no-j", "1", "0");
    let dir = scratch("no-j");
    let out = dump(p.pid(), &dir, &["-R"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--shell-job"));
    assert_eq!(p.finish().trim(), "OK");
}

/// Syscall injection by patching the code at each thread's `rip` (the
/// fallback without a vDSO) puts the code back: the program runs on through
/// the patched instructions and its self-check passes; a forced failure
/// after injection also leaves the code intact.
#[test]
fn code_patching_injection_restores_the_code() {
    for fail in [None, Some("after-inject"), Some("mid-inject")] {
        let (mut p, _tmp) = start_dumpee("patch-code", "2", "2");
        let dir = scratch("patch-code");
        let maps_before = p.maps();
        let mut cmd = criu_rs();
        cmd.args(["dump", "-R", "-j", "-t", &p.pid().to_string(), "-D"]).arg(&dir).env("CRIU_RS_PATCH_CODE", "1");
        if let Some(f) = fail {
            cmd.env("CRIU_RS_FAIL_AT", f);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.success(), fail.is_none(), "{fail:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(p.maps(), maps_before, "{fail:?}");
        assert_eq!(p.finish().trim(), "OK", "{fail:?}");
    }
}

/// A process of another user (limits read from /proc/PID/limits, which
/// needs no CAP_SYS_RESOURCE): dumped, left running, its creds in the images.
#[test]
fn process_of_another_user() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let exe = compile("dumpee");
    let tmp = scratch("other-user-files");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(["2", "1", tmp.to_str().unwrap()]).uid(65534).gid(65534).stderr(common::procs::program_stderr());
    let mut p = Program::start_cmd(cmd);
    let dir = scratch("other-user");
    let out = dump(p.pid(), &dir, &["-R", "-j"]);
    assert!(out.status.success(), "dump failed: {}", String::from_utf8_lossy(&out.stderr));
    let core = crit_decode(&dir.join(format!("core-{}.img", p.pid())));
    let creds = &core["entries"][0]["thread_core"]["creds"];
    assert_eq!(jnum(&creds["uid"]), 65534);
    assert_eq!(jnum(&creds["egid"]), 65534);
    assert_eq!(p.finish().trim(), "OK");
}

/// Threads that keep appearing and exiting while the process is frozen:
/// every dump succeeds and the process carries on creating threads.
#[test]
fn threads_appearing_while_freezing() {
    let exe = compile("threadstorm");
    let mut p = Program::start(&exe, &[]);
    let dir = scratch("threadstorm");
    let mut last = 0;
    for round in 0..5 {
        let out = dump(p.pid(), &dir, &["-R", "-j"]);
        assert!(out.status.success(), "round {round}: {}", String::from_utf8_lossy(&out.stderr));
        let ps = crit_decode(&dir.join("pstree.img"));
        assert!(!ps["entries"][0]["threads"].as_array().unwrap().is_empty());
        // It carries on creating threads: the count grows (asked until it
        // does, however slowly the machine runs).
        use std::io::{BufRead, Write};
        let mut n = 0;
        wait_until(&format!("round {round}: more threads than {last}"), PATIENCE, || {
            p.stdin.as_mut().unwrap().write_all(b"c").unwrap();
            let mut line = String::new();
            p.stdout.as_mut().unwrap().read_line(&mut line).unwrap();
            n = line.trim().strip_prefix("COUNT ").unwrap().parse().unwrap();
            n > last
        });
        last = n;
    }
    let rest = p.finish();
    assert!(rest.trim().ends_with("OK"), "{rest}");
}
