//! Lazy-pages rows of `cargo xtask bench`: lazy restore time
//! ([`crate::bench_lazy_restore`]), fault latency seen by a task
//! touching its pages in random order (timing itself), the daemon's own
//! service time per fault, and the background copy throughput. Runs a
//! release `criu-rs lazy-pages` against the C stand-in task of the lazy
//! tests (`tests/programs/lazy_child.c`), with images written here.

use anyhow::{bail, ensure, Context, Result};
use criu_core::images::consts::pagemap_flags::{LAZY, PRESENT};
use criu_core::images::pb::{InventoryEntry, Lsmtype, TaskKobjIdsEntry};
use criu_core::images::{ImageDir, PAGE_SIZE};
use criu_core::pageserver::store::{write_pagemap, PageRun};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const MIB: u64 = 1 << 20;
const BASE: u64 = 0x6200_0000_0000;

/// The lazy-pages rows.
pub fn rows(root: &Path, runs: u32) -> Result<Vec<(&'static str, String)>> {
    let (work, criu_rs, child) = prepare(root)?;
    let size = 64 * MIB;
    let (kid_out, daemon_out) = run(&criu_rs, &child, &work, "random", size, &["--no-background", "--fault-chunk", "4"])?;
    let ns = |key: &str| -> Result<f64> {
        kid_out
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no {key} from the task"))
    };
    let task = format!("{:.2} µs median, {:.2} µs p90 per 4 KiB fault, random order, 64 MiB", ns("median_ns ")? / 1e3, ns("p90_ns ")? / 1e3);
    let service = between(&daemon_out, "median service ", ")").unwrap_or("n/a").to_string();
    let mut rows = crate::bench_lazy_restore::rows(root, &criu_rs, runs)?;
    rows.extend([
        ("lazy fault, stand-in task view", task),
        ("lazy fault, stand-in daemon counters", format!("median service {service}")),
        ("lazy background copy", bg_copy(&criu_rs, &child, &work, 1024)?),
    ]);
    Ok(rows)
}

/// The background copy rows alone: `runs` times with 1 MiB chunks, then
/// with 4 MiB chunks.
pub fn bg_rows(root: &Path, runs: u32) -> Result<Vec<(&'static str, String)>> {
    let (work, criu_rs, child) = prepare(root)?;
    let mut rows = Vec::new();
    for kib in [1024, 4096] {
        for _ in 0..runs.max(1) {
            rows.push(("lazy background copy", bg_copy(&criu_rs, &child, &work, kib)?));
        }
    }
    Ok(rows)
}

/// The work directory, the release `criu-rs` and the compiled stand-in task.
fn prepare(root: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let work = root.join("target/bench-lazy");
    std::fs::create_dir_all(&work)?;
    let criu_rs = build_criu_rs(root)?;
    let child = work.join("lazy_child");
    let st = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&child)
        .arg(root.join("tests/programs/lazy_child.c"))
        .status()?;
    ensure!(st.success(), "gcc lazy_child.c failed");
    Ok((work, criu_rs, child))
}

/// 256 MiB of an idle task copied in the background in `kib` KiB chunks:
/// the throughput from the hand-over to the end.
fn bg_copy(criu_rs: &Path, child: &Path, work: &Path, kib: u64) -> Result<String> {
    let (_, daemon_out) = run(criu_rs, child, work, "idle", 256 * MIB, &["--bg-chunk", &kib.to_string()])?;
    let bg_pages: f64 = number_before(&daemon_out, " pages in background").unwrap_or(0.0);
    let secs: f64 = between(&daemon_out, "served in ", " s").and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let gbps = if secs > 0.0 { bg_pages * PAGE_SIZE as f64 / secs / 1e9 } else { 0.0 };
    let split = between(&daemon_out, " chunks (", ")").unwrap_or("n/a");
    Ok(format!("{gbps:.2} GB/s (256 MiB, {kib} KiB chunks, {secs:.3} s; copying {split})"))
}

/// The fault rows alone, `runs` times ([`crate::bench_lazy_restore::fault_rows`]).
pub fn fault_rows(root: &Path, runs: u32) -> Result<Vec<(&'static str, String)>> {
    let criu_rs = build_criu_rs(root)?;
    crate::bench_lazy_restore::fault_only(root, &criu_rs, runs)
}

/// Builds the release `criu-rs`; returns its path. `BENCH_CRIU_RS=PATH`
/// measures that binary instead (e.g. another branch's build).
pub(crate) fn build_criu_rs(root: &Path) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("BENCH_CRIU_RS") {
        return Ok(PathBuf::from(p));
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo).args(["build", "--quiet", "--release", "-p", "criu-cli"]).current_dir(root).status()?;
    ensure!(st.success(), "building criu-rs (release) failed");
    Ok(root.join("target/release/criu-rs"))
}

/// The number just before `marker` in `s`.
fn number_before(s: &str, marker: &str) -> Option<f64> {
    s[..s.find(marker)?].rsplit(' ').next()?.parse().ok()
}

fn between<'a>(s: &'a str, from: &str, to: &str) -> Option<&'a str> {
    let rest = &s[s.find(from)? + from.len()..];
    Some(&rest[..rest.find(to)?])
}

/// A stand-in task, killed if still there on drop.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One task in `mode` served by the daemon with `args`; returns the task's
/// and the daemon's output.
fn run(criu_rs: &Path, child: &Path, work: &Path, mode: &str, size: u64, args: &[&str]) -> Result<(String, String)> {
    let dir: PathBuf = work.join(format!("images-{mode}"));
    let _ = std::fs::remove_dir_all(&dir);
    let sock = dir.join("lazy.sock");
    std::fs::create_dir_all(&dir)?;
    let mut kid = Kid(
        Command::new(child)
            .args([mode, &size.to_string(), &format!("{BASE:x}")])
            .arg(&sock)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let mut out = BufReader::new(kid.0.stdout.take().context("stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    ensure!(line.trim() == "ready", "task: {line}");
    let images = ImageDir::open_unchecked(&dir);
    let pid = kid.0.id();
    let runs = [PageRun { vaddr: BASE, nr_pages: size / PAGE_SIZE - 1, flags: LAZY | PRESENT }];
    write_pagemap(&images, pid, pid, &runs, &mut |at, buf| {
        for (i, w) in buf.chunks_exact_mut(8).enumerate() {
            let a = at + 8 * i as u64;
            w.copy_from_slice(&a.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(0x123_4567).to_le_bytes());
        }
    })?;
    let ids = TaskKobjIdsEntry { vm_id: Some(1), files_id: Some(1), fs_id: Some(1), sighand_id: Some(1), ..Default::default() };
    images.write_inventory(&InventoryEntry::for_dump(ids, Lsmtype::NoLsm))?;
    let mut stdin = kid.0.stdin.take().context("stdin")?;
    // The task retries its connect until the daemon listens.
    stdin.write_all(b"go\n")?;
    let daemon = Command::new(criu_rs)
        .args(["-v1", "lazy-pages", "-D"])
        .arg(&dir)
        .arg("--address")
        .arg(&sock)
        .args(["--tasks", "1"])
        .args(args)
        .output()?;
    let daemon_out = String::from_utf8_lossy(&daemon.stdout).into_owned();
    if !daemon.status.success() {
        bail!("lazy-pages failed: {}\n{daemon_out}{}", daemon.status, String::from_utf8_lossy(&daemon.stderr));
    }
    // An idle task checks its memory once told to.
    let _ = stdin.write_all(b"go\n");
    drop(stdin);
    let mut kid_out = String::new();
    while out.read_line(&mut kid_out)? > 0 {}
    let st = kid.0.wait()?;
    ensure!(st.success(), "task in mode {mode} failed: {st}: {kid_out}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok((kid_out, daemon_out))
}
