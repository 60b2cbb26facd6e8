//! Corrupted image sets: random byte flips in every image but the raw pages
//! file must never crash criu-rs (panic) or leave a task behind. Each run
//! either restores the task (which then exits 42, or dies of a signal if a
//! flipped register made it crash) or fails with an error message.

mod common;

use common::*;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// splitmix64: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let z = (self.0 ^ (self.0 >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[test]
fn flipped_bytes_never_crash_criu_rs_nor_leave_a_task() {
    let base = scratch("fuzz-base");
    let pid = free_pid();
    ImageSet::minimal(pid).write(&base);
    let files: Vec<_> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with("pages-"))
        .collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let dir = scratch("fuzz-run");
    for round in 0..60 {
        for f in &files {
            std::fs::copy(f, dir.join(f.file_name().unwrap())).unwrap();
        }
        std::fs::copy(base.join("pages-1.img"), dir.join("pages-1.img")).unwrap();
        let victim = &files[(rng.next() % files.len() as u64) as usize];
        let path = dir.join(victim.file_name().unwrap());
        let mut bytes = std::fs::read(&path).unwrap();
        for _ in 0..1 + rng.next() % 3 {
            let i = (rng.next() % bytes.len() as u64) as usize;
            bytes[i] ^= 1 << (rng.next() % 8);
        }
        std::fs::write(&path, &bytes).unwrap();
        let before = snapshot(&dir);
        let mut child = Command::new(env!("CARGO_BIN_EXE_criu-rs"))
            .args(["restore", "-v0", "-D"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > until {
                // A flipped byte may make the restored code spin: stop it.
                // SAFETY: kill(2) of the pid this test restores.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        let what = format!("round {round}, {}", victim.file_name().unwrap().to_string_lossy());
        match status.code() {
            Some(42) => {}
            Some(1) => assert!(err.contains("Error:"), "{what}: exit 1 without an error message: {err}"),
            Some(c) if c > 128 => {} // the restored task died of a signal
            other => panic!("{what}: criu-rs ended with {other:?}: {err}"),
        }
        wait_pid_gone(pid);
        assert_eq!(before, snapshot(&dir), "{what}: restore changed the images");
    }
}
