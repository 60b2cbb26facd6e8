//! Eager-restore throughput of a warm 1 GiB process:
//! - whole command: dump `tests/programs/bigmem.c` holding 1 GiB, then time
//!   `criu-rs restore -d` from the (page-cached) images (the restored
//!   bigmem ends at once: its stdin pipe has no writer any more; the
//!   restore tests check restored memory);
//! - memory phase alone: premap a 1 GiB private anonymous VMA and fill it
//!   from a warm pages file, as the task does before the blob runs.

use anyhow::{Context, Result};
use criu_core::restore::plan::{PageRun, PagesPlan, VmaKind, VmaPlan, PAGE_SIZE};
use criu_core::restore::premap::{fill, finish, premap};
use std::io::Write;
use std::time::Instant;

/// Bytes restored per run.
const SIZE: u64 = 1 << 30;

/// Returns (bytes, best seconds over `runs`) for premap + fill of 1 GiB.
pub fn measure(runs: u32) -> Result<(u64, f64)> {
    let path = std::env::temp_dir().join(format!("criu-rs-bench-pages-{}.img", std::process::id()));
    let mut f = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let chunk: Vec<u8> = (0..(8u64 << 20)).map(|i| (i * 31 % 251) as u8).collect();
    for _ in 0..SIZE / chunk.len() as u64 {
        f.write_all(&chunk)?;
    }
    drop(f);
    let result = run(&path, runs);
    let _ = std::fs::remove_file(&path);
    result
}

fn run(path: &std::path::Path, runs: u32) -> Result<(u64, f64)> {
    let target = 0x5000_0000_0000u64;
    let vmas = vec![VmaPlan {
        start: target,
        end: target + SIZE,
        pgoff: 0,
        prot: (libc::PROT_READ | libc::PROT_WRITE) as u32,
        flags: (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u32,
        madv: 0,
        kind: VmaKind::Anon,
    }];
    let pages = PagesPlan { path: path.to_path_buf(), runs: vec![PageRun { vaddr: target, nr_pages: SIZE / PAGE_SIZE, file_off: 0 }] };
    let open = |p: &std::path::Path| {
        rustix::fs::open(p, rustix::fs::OFlags::RDONLY, rustix::fs::Mode::empty())
            .map_err(|e| criu_core::restore::RestoreError::sys(format!("open {}", p.display()), e))
    };
    let fd = open(path)?;
    let mut best = f64::MAX;
    for _ in 0..runs.max(1) + 1 {
        let busy: Vec<(u64, u64)> = criu_core::restore::maps::read_maps(None)?
            .iter()
            .map(|m| (m.start, m.end))
            .chain([(target, target + SIZE)])
            .collect();
        let start = Instant::now();
        let pm = premap(&vmas, &busy, &|_| true, &open)?;
        let bytes = fill(&pm, &vmas, &pages, &fd)?;
        finish(&pm, &vmas)?;
        let secs = start.elapsed().as_secs_f64();
        anyhow::ensure!(bytes == SIZE, "filled {bytes} bytes, expected {SIZE}");
        // SAFETY: unmapping the premap area this function just created.
        unsafe { rustix::mm::munmap(pm.base as *mut std::ffi::c_void, pm.len as usize) }?;
        best = best.min(secs);
    }
    Ok((SIZE, best))
}

/// Dumps bigmem (1 GiB) and times `criu-rs restore -d` `runs` times;
/// returns (bytes of pages, best seconds).
pub fn measure_whole(root: &std::path::Path, runs: u32) -> Result<(u64, f64)> {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let (criu, bigmem) = crate::bench_dump::build(root)?;
    let dir = root.join("target/bench-restore/images");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut child = Command::new(&bigmem).arg("1024").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let pid = child.id() as i32;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    if !line.starts_with("READY") {
        let _ = child.kill();
        let _ = child.wait();
        anyhow::bail!("bigmem said {line:?}");
    }
    let out = Command::new(&criu).args(["dump", "-j", "-v0", "-t", &pid.to_string(), "-D"]).arg(&dir).output().context("dump")?;
    let _ = child.kill();
    let _ = child.wait();
    anyhow::ensure!(out.status.success(), "dump failed: {}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::metadata(dir.join("pages-1.img"))?.len();
    // The dump writes pages with O_DIRECT: read them once so they are warm.
    std::io::copy(&mut std::fs::File::open(dir.join("pages-1.img"))?, &mut std::io::sink())?;
    let mut best = f64::MAX;
    for _ in 0..runs.max(1) {
        wait_gone(pid)?;
        let start = Instant::now();
        let out = Command::new(&criu).args(["restore", "-d", "-j", "-v0", "-D"]).arg(&dir).output().context("restore")?;
        let secs = start.elapsed().as_secs_f64();
        // SAFETY: kill(2) of the task this bench restored (if still there).
        unsafe { libc::kill(pid, libc::SIGKILL) };
        anyhow::ensure!(out.status.success(), "restore failed: {}", String::from_utf8_lossy(&out.stderr));
        best = best.min(secs);
    }
    wait_gone(pid)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok((bytes, best))
}

/// Waits until `/proc/PID` is gone (init reaps restored tasks).
fn wait_gone(pid: i32) -> Result<()> {
    let start = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        anyhow::ensure!(start.elapsed().as_secs() < 10, "pid {pid} is still in use");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok(())
}

/// The bench table row.
pub fn row(runs: u32) -> Result<(&'static str, String)> {
    let (wb, ws) = measure_whole(&crate::workspace_root(), runs)?;
    let (bytes, secs) = measure(runs)?;
    Ok((
        "restore throughput",
        format!(
            "{:.2} GB/s whole `restore -d` of 1 GiB warm; {:.2} GB/s memory phase (premap+fill) (best of {runs})",
            wb as f64 / ws / 1e9,
            bytes as f64 / secs / 1e9
        ),
    ))
}
