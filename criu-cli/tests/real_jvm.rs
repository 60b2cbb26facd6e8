//! A real program (issue 13): the system's JVM (OpenJDK 17, installed by
//! `cargo xtask setup`) running a small counting loop. A JVM opens a unix
//! socket at start (one end of a pair whose other end it closed), has
//! dozens of threads, a pipe and mapped files. It is dumped, killed,
//! restored, and checked from outside: the counter goes on from where it
//! stopped, in the same process.

mod common;

use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

const LOOP_JAVA: &str = r#"
import java.io.FileWriter;

public class Loop {
    public static void main(String[] args) throws Exception {
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

/// The numbers the loop wrote so far.
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

#[test]
fn a_jvm_keeps_counting_after_dump_and_restore() {
    let work = scratch("jvm-work");
    let images = scratch("jvm-images");
    let src = work.join("Loop.java");
    std::fs::write(&src, LOOP_JAVA).unwrap();
    let out = work.join("counts.txt");
    let mut cmd = std::process::Command::new("java");
    cmd.args(["-Xmx64m", "-XX:TieredStopAtLevel=1"]).arg(&src).arg(&out).current_dir(&work);
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(work.join("stdout.txt")).unwrap())
        .stderr(std::fs::File::create(work.join("stderr.txt")).unwrap());
    in_own_session(&mut cmd);
    let mut child = cmd.spawn().expect("running java (cargo xtask setup installs it)");
    let pid = child.id() as i32;
    let jvm = Held::open(pid).unwrap();
    // Compiling Loop.java in the JVM takes a while on a busy machine.
    wait_count(&out, 10, PATIENCE * 2);
    let kinds = fd_kinds(pid);
    assert!(kinds.iter().any(|(_, k)| k.starts_with("socket:")), "the JVM holds no socket: {kinds:?}");
    dump_ok(pid, &images, &[]);
    let _ = child.wait();
    drop(jvm);
    wait_pid_gone(pid);
    let before = counts(&out);
    let last = *before.last().unwrap();
    let held = restore_detached(&images, pid);
    let after = wait_count(&out, last + 50, PATIENCE);
    // It went on from where it was: the next number, not a restart from 1.
    assert_eq!(after[before.len()], last + 1, "the restored loop did not continue from {last}");
    assert!(after.windows(2).all(|w| w[1] == w[0] + 1), "numbers skipped or repeated");
    assert!(alive(held.pid), "the restored JVM is gone");
    drop(held);
}
