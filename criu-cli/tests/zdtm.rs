//! CRIU's own test suite (zdtm) drives criu-rs in CRIU's place: every test
//! listed in `tests/zdtm-pass.txt` (those that pass on this machine in the
//! host flavor) must pass again.
//!
//! zdtm starts each test program (most as uid 18943), then runs `criu-rs
//! dump`, `restore` and friends with CRIU's command line, checks the
//! restored program's own verdict, the page counts of `stats-dump` against
//! the pages images, and that the logs hold no error. Every restore runs
//! with `--verify` (zdtm passes `--no-default-config`; criu-rs still reads
//! `CRIU_CONFIG_FILE`, which names a file saying `verify`).
//!
//! CRIU's test tree is built outside the repository
//! (`../shared/tools/upstream-criu.sh` builds `/tmp/upstream-criu`; another
//! place with `ZDTM_DIR`). The test is `#[ignore]`d (CI does not build
//! CRIU, and the run takes minutes): `cargo xtask zdtm` runs it, and fails
//! when the tree is not built. zdtm writes into its own tree, so
//! runs from several checkouts take turns (a lock file in /tmp).

mod common;

use common::*;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The zdtm tree: `$ZDTM_DIR` or `/tmp/upstream-criu/test`.
fn zdtm_dir() -> PathBuf {
    std::env::var_os("ZDTM_DIR").map_or_else(|| PathBuf::from("/tmp/upstream-criu/test"), PathBuf::from)
}

/// The tests of `tests/zdtm-pass.txt` (one per line, `#` comments).
fn pass_list() -> Vec<String> {
    let path = repo_root().join("tests/zdtm-pass.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(|l| l.split('#').next().unwrap().trim()).filter(|l| !l.is_empty()).map(String::from).collect()
}

/// Holds an exclusive `flock` on `path` until dropped.
struct Lock {
    _file: std::fs::File,
}

impl Lock {
    fn take(path: &Path) -> Lock {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        // SAFETY: flock on a descriptor we own; blocks until the lock is ours.
        assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0, "flock {}", path.display());
        Lock { _file: f }
    }
}

/// Each test's verdict in zdtm's output: `(name, "PASS" | "FAIL" | "SKIP")`.
fn verdicts(out: &str) -> Vec<(String, &'static str)> {
    let mut v = Vec::new();
    for line in out.lines() {
        // "==== Test NAME PASS ====" (no rule when the title is long),
        // "#### Test NAME FAIL at ... ####", "Skipping NAME (why)".
        let words: Vec<&str> = line.split_whitespace().skip_while(|w| w.chars().all(|c| c == '=' || c == '#')).collect();
        match words.as_slice() {
            ["Test", name, "PASS", ..] => v.push((name.to_string(), "PASS")),
            ["Test", name, "FAIL", ..] => v.push((name.to_string(), "FAIL")),
            ["Skipping", name, ..] => v.push((name.to_string(), "SKIP")),
            _ => {}
        }
    }
    v
}

#[test]
#[ignore = "runs CRIU's zdtm suite (needs its built tree, ../shared/tools/upstream-criu.sh): cargo xtask zdtm"]
fn zdtm_tests_that_passed_still_pass() {
    let dir = zdtm_dir();
    assert!(
        dir.join("zdtm.py").exists(),
        "CRIU's test suite is not built at {} (build it with ../shared/tools/upstream-criu.sh, or set ZDTM_DIR)",
        dir.display()
    );
    let tests = pass_list();
    assert!(!tests.is_empty(), "tests/zdtm-pass.txt lists no test");
    let _lock = Lock::take(Path::new("/tmp/criu-rs-zdtm.lock"));
    let mut cmd = Command::new("python3");
    cmd.current_dir(&dir).args(["zdtm.py", "run", "-f", "h", "--keep-going", "--criu-bin", env!("CARGO_BIN_EXE_criu-rs")]);
    for t in &tests {
        cmd.args(["-t", t]);
    }
    // zdtm's output (and criu-rs's stderr through it) goes to a file.
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join("zdtm-run.log");
    let file = std::fs::File::create(&log).unwrap();
    let conf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("zdtm-verify.conf");
    std::fs::write(&conf, "verify\n").unwrap();
    cmd.env("PATH", "/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CRIU_CONFIG_FILE", &conf)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    let mut child = Proc::from(cmd.spawn().expect("python3 zdtm.py"));
    // zdtm gives up on a stuck test itself; this is only a hang guard.
    let limit = PATIENCE * 2 * tests.len() as u32;
    let t0 = Instant::now();
    while child.try_wait().is_none() {
        assert!(t0.elapsed() < limit, "zdtm ran for more than {limit:?} (output: {})", log.display());
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    let got = verdicts(&out);
    let failed: Vec<String> = tests
        .iter()
        .filter(|t| !got.iter().any(|(n, v)| n == *t && *v == "PASS"))
        .map(|t| format!("{t} ({})", got.iter().find(|(n, _)| n == t).map_or("no verdict", |(_, v)| *v)))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} zdtm tests that passed before do not pass now: {}\n(zdtm's output: {})",
        failed.len(),
        tests.len(),
        failed.join(", "),
        log.display()
    );
}

#[test]
fn zdtm_output_is_read_as_zdtm_writes_it() {
    let out = "=== Run 1/3 ================ zdtm/static/env00\n\
               ========================= Test zdtm/static/env00 PASS ==========================\n\
               ################## Test zdtm/static/pipe00 FAIL at CRIU restore ##################\n\
               Test zdtm/static/a_test_with_a_name_long_enough_to_leave_no_room_for_the_rule PASS\n\
               Skipping zdtm/static/tun (no tun feature)\n";
    assert_eq!(
        verdicts(out),
        [
            ("zdtm/static/env00".to_string(), "PASS"),
            ("zdtm/static/pipe00".to_string(), "FAIL"),
            ("zdtm/static/a_test_with_a_name_long_enough_to_leave_no_room_for_the_rule".to_string(), "PASS"),
            ("zdtm/static/tun".to_string(), "SKIP")
        ]
    );
}
