//! `cargo xtask bench`, pre-dump row: how much an incremental dump saves.
//!
//! Starts `tests/programs/dirtier.c` with 1 GiB, dumps it whole once
//! (`dump -R`, after a warm-up), then pre-dumps it, lets it rewrite a
//! seventh of its memory (one round), and dumps it against the pre-dump
//! (`--prev-images-dir`). Reports the time each command took, how long the
//! process was frozen (`stats-dump` frozen_time) and the pages written.
//! The program checks its memory at the end.

use anyhow::{bail, Context, Result};
use criu_core::images::{pb, ImageDir, ImageKind};
use std::io::{BufRead, BufReader};
use std::path::Path;
use crate::bench::Kill;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `criu-rs ARGS -D dir` into a fresh `dir`; returns wall seconds.
fn timed(criu: &Path, args: &[&str], dir: &Path) -> Result<f64> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let t = Instant::now();
    let out = Command::new(criu).args(args).arg("-D").arg(dir).output()?;
    if !out.status.success() {
        bail!("criu-rs {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(t.elapsed().as_secs_f64())
}

/// (frozen ms, pages written) from a dump's stats image.
fn stats(dir: &Path) -> Result<(f64, u64)> {
    let s: pb::StatsEntry = ImageDir::open_unchecked(dir).read_one(ImageKind::StatsDump, 0)?;
    let d = s.dump.context("no dump stats")?;
    Ok((d.frozen_time.unwrap_or(0) as f64 / 1e3, d.pages_written.unwrap_or(0)))
}

pub fn row(root: &Path) -> Result<(&'static str, String)> {
    let (criu, _) = crate::bench_dump::build(root)?;
    let work = root.join("target/bench-predump");
    std::fs::create_dir_all(&work)?;
    let exe = work.join("dirtier");
    let st = Command::new("cc")
        .args(["-O2", "-I"])
        .arg(root.join("tests/programs"))
        .arg("-o")
        .arg(&exe)
        .arg(root.join("tests/programs/dirtier.c"))
        .status()?;
    if !st.success() {
        bail!("compiling dirtier.c failed");
    }
    let result = work.join("result");
    let _ = std::fs::remove_file(&result);
    let mut child = Command::new(&exe).arg(&result).arg("1024").arg("1").stdout(Stdio::piped()).spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let pid = child.id().to_string();
    let guard = Kill(child);
    if !line.starts_with("READY") {
        bail!("dirtier said {line:?}");
    }
    let full = work.join("full");
    let dump = ["dump", "-R", "-j", "-t", &pid];
    timed(&criu, &dump, &full)?; // warm-up
    let full_s = timed(&criu, &dump, &full)?;
    let (full_frozen, full_pages) = stats(&full)?;
    let pre_s = timed(&criu, &["pre-dump", "-t", &pid], &work.join("pre"))?;
    // One round: a seventh of the memory rewritten, some pages dropped.
    // SAFETY: kill on our own unreaped child.
    unsafe { libc::kill(guard.0.id() as i32, libc::SIGUSR1) };
    let round = work.join("result.round");
    let t = Instant::now();
    while std::fs::read_to_string(&round).ok().as_deref() != Some("1") {
        if t.elapsed() > Duration::from_secs(120) {
            bail!("dirtier never finished its round");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let inc = work.join("incremental");
    let inc_s = timed(&criu, &["dump", "-R", "-j", "-t", &pid, "--prev-images-dir", "../pre"], &inc)?;
    let (inc_frozen, inc_pages) = stats(&inc)?;
    // SAFETY: as above.
    unsafe { libc::kill(guard.0.id() as i32, libc::SIGUSR2) };
    let t = Instant::now();
    let report = loop {
        if let Ok(r) = std::fs::read_to_string(&result) {
            break r;
        }
        if t.elapsed() > Duration::from_secs(120) {
            bail!("dirtier never reported");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if report.lines().last() != Some("ALL OK") {
        bail!("dirtier's memory changed by the dumps: {report}");
    }
    drop(guard);
    let _ = std::fs::remove_dir_all(&work);
    Ok((
        "incremental dump (1 GiB, 1/7 rewritten)",
        format!(
            "full dump {:.0} ms ({full_pages} pages, frozen {full_frozen:.0} ms); pre-dump {:.0} ms; \
             dump against it {:.0} ms ({inc_pages} pages, frozen {inc_frozen:.0} ms)",
            full_s * 1e3,
            pre_s * 1e3,
            inc_s * 1e3
        ),
    ))
}
