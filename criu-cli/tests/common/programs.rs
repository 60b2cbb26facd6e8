//! The C programs the tests start (`tests/programs/NAME.c`): compiling
//! them, and the setups some of them need before they start.
//!
//! Most programs print one `READY key=value...` line once set up (see
//! [`Program`](super::procs::Program)); the self-checking ones include
//! `selfcheck.h`, wait for SIGUSR1 in `rt_sigsuspend`, check their own
//! state and write a report ending in `ALL OK`
//! ([`assert_all_ok`](super::check::assert_all_ok)).

use super::repo_root;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

static COMPILE_LOCK: Mutex<()> = Mutex::new(());

fn mtime(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Compiles `tests/programs/NAME.c` with `cc` (`-O1 -Wall -pthread`) into
/// `target/tmp/programs/NAME` unless that is newer than the source and
/// every header of `tests/programs/` (`selfcheck.h`); returns the executable.
pub fn compile(name: &str) -> PathBuf {
    let _g = COMPILE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = repo_root().join("tests/programs");
    let src = dir.join(format!("{name}.c"));
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("programs");
    std::fs::create_dir_all(&out_dir).unwrap();
    let exe = out_dir.join(name);
    let newest_input = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| *p == src || p.extension().is_some_and(|x| x == "h"))
        .filter_map(|p| mtime(&p))
        .max();
    assert!(src.exists(), "no test program {}", src.display());
    if mtime(&exe).is_some() && mtime(&exe) >= newest_input {
        return exe;
    }
    let compiler = cc::Build::new()
        .cargo_metadata(false)
        .target("x86_64-unknown-linux-gnu")
        .host("x86_64-unknown-linux-gnu")
        .opt_level(1)
        .get_compiler();
    // Built aside and renamed into place: another test binary may be
    // running the previous build.
    let tmp = out_dir.join(format!("{name}.{}.tmp", std::process::id()));
    let st = compiler
        .to_command()
        .args(["-Wall", "-pthread", "-o"])
        .arg(&tmp)
        .arg(&src)
        .status()
        .expect("running the C compiler");
    assert!(st.success(), "compiling {}", src.display());
    std::fs::rename(&tmp, &exe).unwrap();
    exe
}

/// Makes the command's child call `setsid()` before exec: a process in its
/// own session is dumped without `--shell-job`, as a daemon would be.
pub fn in_own_session(cmd: &mut Command) -> &mut Command {
    // SAFETY: setsid(2) is async-signal-safe and touches no Rust state.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// `restoree` (tests/programs/restoree.c) started in its own session in the
/// work directory `wd` (filled with the files it maps and opens), stdout
/// to `wd/log.txt`, once it printed READY and waits for SIGUSR1. Returns
/// the child and its log; after SIGUSR1 the log says `OK` when every
/// check passed.
pub fn start_restoree(wd: &Path) -> (Child, PathBuf) {
    let noise: Vec<u8> = (0..16384u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    for (file, data) in [
        ("private.bin", noise),
        ("shared.bin", vec![0; 8192]),
        ("data.txt", b"0123456789abcdef".to_vec()),
        ("append.txt", b"app".to_vec()),
    ] {
        std::fs::write(wd.join(file), data).unwrap();
    }
    let log = wd.join("log.txt");
    let mut cmd = Command::new(compile("restoree"));
    cmd.arg(wd)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(wd.join("err.txt")).unwrap());
    let child = in_own_session(&mut cmd).spawn().unwrap();
    let pid = child.id() as i32;
    super::wait_until("restoree to be READY", super::PATIENCE, || std::fs::read_to_string(&log).unwrap().contains("READY"));
    super::wait_until("restoree to wait for SIGUSR1", super::PATIENCE, || restoree_waits(pid));
    (child, log)
}

/// Whether `restoree` (started or restored) waits for SIGUSR1: in
/// `pause()` and traced by no one (a task being restored is traced by
/// criu-rs until it is let go).
pub fn restoree_waits(pid: i32) -> bool {
    const NR_PAUSE: u64 = 34;
    super::status_field(pid, "TracerPid:").as_deref() == Some("0") && super::blocked_in(pid, pid) == Some(NR_PAUSE)
}
