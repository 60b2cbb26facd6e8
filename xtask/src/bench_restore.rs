//! Eager-restore memory throughput: premap a 1 GiB private anonymous VMA
//! and fill it from a warm (page-cached) pages file, as `criu-rs restore`
//! does in the task before the blob runs.

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

/// The bench table row.
pub fn row(runs: u32) -> Result<(&'static str, String)> {
    let (bytes, secs) = measure(runs)?;
    Ok(("restore throughput (premap+fill, warm 1 GiB)", format!("{:.2} GB/s (best of {runs})", bytes as f64 / secs / 1e9)))
}
