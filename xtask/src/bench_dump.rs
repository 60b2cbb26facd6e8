//! `cargo xtask bench`, dump row: dump throughput of a warm 1 GiB process.
//!
//! Builds `criu-rs` (release) and `tests/programs/bigmem.c`, starts bigmem
//! with 1 GiB of non-zero anonymous memory, dumps it once with
//! `--leave-running` to warm everything up, then times further dumps into
//! fresh directories on the images disk and on tmpfs (`/dev/shm`). Reports
//! GB/s of dumped memory over the whole command, over the memory phase
//! (`stats-dump` memdump_time) and over the reading alone
//! (`process_vm_readv` time from the log), and checks the program's memory
//! after.

use anyhow::{bail, Context, Result};
use criu_core::images::{pb, ImageDir, ImageKind};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use crate::bench::Kill;
use std::process::{Command, Stdio};
use std::time::Instant;

const MIB: u64 = 1024;

/// Builds release `criu-rs` and `bigmem`; returns their paths.
pub(crate) fn build(root: &Path) -> Result<(PathBuf, PathBuf)> {
    let st = Command::new(env!("CARGO")).args(["build", "--release", "-q", "-p", "criu-cli"]).current_dir(root).status()?;
    if !st.success() {
        bail!("building criu-rs failed");
    }
    let out = root.join("target/bench-dump");
    std::fs::create_dir_all(&out)?;
    let exe = out.join("bigmem");
    let st = Command::new("cc").args(["-O2", "-o"]).arg(&exe).arg(root.join("tests/programs/bigmem.c")).status()?;
    if !st.success() {
        bail!("compiling bigmem.c failed");
    }
    Ok((root.join("target/release/criu-rs"), exe))
}

/// One timed dump: (wall seconds, memdump seconds, read seconds, bytes written).
fn dump_once(criu: &Path, pid: u32, dir: &Path) -> Result<(f64, f64, f64, u64)> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let t = Instant::now();
    let out = Command::new(criu)
        .args(["dump", "-R", "-j", "-v3", "-o", "dump.log", "-t", &pid.to_string(), "-D"])
        .arg(dir)
        .output()?;
    let wall = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("dump failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let stats: pb::StatsEntry = ImageDir::open_unchecked(dir).read_one(ImageKind::StatsDump, 0)?;
    let d = stats.dump.context("no dump stats")?;
    let mem = d.memdump_time.unwrap_or(0) as f64 / 1e6;
    // The time spent in process_vm_readv alone is only in the log.
    let log = std::fs::read_to_string(dir.join("dump.log"))?;
    let read_ms: f64 = log
        .split_whitespace()
        .find_map(|w| w.strip_prefix("memread_ms="))
        .and_then(|v| v.parse().ok())
        .context("no memread_ms in the dump log")?;
    Ok((wall, mem, read_ms / 1e3, d.pages_written.unwrap_or(0) * 4096))
}

/// Runs the measurement; returns the table cell text.
pub fn dump_throughput(root: &Path, runs: u32) -> Result<String> {
    let (criu, bigmem) = build(root)?;
    let mut child = Command::new(&bigmem).arg(MIB.to_string()).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let mut stdin = child.stdin.take().context("stdin")?;
    let pid = child.id();
    let guard = Kill(child);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    if !line.starts_with("READY") {
        bail!("bigmem said {line:?}");
    }
    let mut cells = Vec::new();
    for (label, base) in [("disk", root.join("target/bench-dump/images")), ("tmpfs", PathBuf::from("/dev/shm/criu-rs-bench-dump"))] {
        dump_once(&criu, pid, &base)?; // warm-up
        let (mut wall, mut mem, mut read, mut bytes) = (f64::MAX, f64::MAX, f64::MAX, 0);
        for _ in 0..runs.clamp(1, 5) {
            let (w, m, r, b) = dump_once(&criu, pid, &base)?;
            wall = wall.min(w);
            mem = mem.min(m);
            read = read.min(r.max(1e-6));
            bytes = b;
        }
        let _ = std::fs::remove_dir_all(&base);
        let gb = bytes as f64 / 1e9;
        cells.push(format!(
            "{label}: {:.2} GB/s whole dump, {:.2} GB/s memory phase, {:.2} GB/s reading",
            gb / wall,
            gb / mem,
            gb / read
        ));
    }
    stdin.write_all(b"g")?;
    drop(stdin);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest)?;
    if rest.trim() != "OK" {
        bail!("bigmem's memory changed by the dumps: {rest}");
    }
    drop(guard);
    Ok(format!("{} (1 GiB warm, best of runs; {})", cells[0].clone(), cells[1..].join("; ")))
}
