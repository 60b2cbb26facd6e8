//! `criu-rs dump`: local images, `--page-server` (pages sent to a remote
//! `criu-rs page-server`) or `--lazy-pages` (memory kept here and served to
//! `criu-rs lazy-pages --page-server` after the process is gone).

use anyhow::{Context, Result};
use criu_core::dump::{self, remote::PagesTo, DumpOptions, DumpSummary};

use crate::{DumpArgs, PreDumpArgs};

fn log_summary(pid: i32, s: &DumpSummary) {
    tracing::info!(
        pid,
        tasks = s.tasks,
        zombies = s.zombies,
        threads = s.process.threads.len(),
        pages_written = s.mem.pages_written,
        pages_lazy = s.mem.pages_lazy,
        pages_in_parent = s.mem.pages_in_parent,
        pages_skipped_zero = s.mem.pages_skipped_zero,
        frozen_ms = s.frozen_time.as_millis() as u64,
        memdump_ms = s.memdump_time.as_millis() as u64,
        memread_ms = s.mem.read_time.as_millis() as u64,
        memwrite_ms = s.mem.write_time.as_millis() as u64,
        "dump finished"
    );
}

/// `criu-rs pre-dump`: the memory only, the tree left running, written
/// pages tracked for the next dump (`--prev-images-dir` pointing here).
pub fn pre_dump(a: PreDumpArgs) -> Result<i32> {
    let opts = DumpOptions {
        pid: a.pid,
        dir: a.dir,
        leave_running: true,
        shell_job: true,
        freeze_timeout: std::time::Duration::from_secs(a.timeout),
        pages_to: PagesTo::Local,
        parent: a.prev_images_dir,
        track_mem: true,
        pre_dump: true,
        tcp_established: false,
        tcp_skip_in_flight: false,
        tcp_close: false,
        network_lock: Default::default(),
    };
    let s = dump::dump(&opts).context("pre-dump failed")?;
    tracing::info!(
        pid = opts.pid,
        tasks = s.tasks,
        pages_written = s.mem.pages_written,
        pages_in_parent = s.mem.pages_in_parent,
        frozen_ms = s.frozen_time.as_millis() as u64,
        "pre-dump finished"
    );
    Ok(0)
}

pub fn dump(a: DumpArgs) -> Result<i32> {
    let pages_to = if a.page_server {
        let host = a.address.as_deref().context("--page-server needs --address HOST")?;
        let port = a.port.context("--page-server needs --port PORT")?;
        PagesTo::PageServer(format!("{host}:{port}"))
    } else if a.lazy_pages {
        PagesTo::Held
    } else {
        anyhow::ensure!(a.port.is_none() && a.address.is_none(), "--address/--port need --page-server or --lazy-pages");
        PagesTo::Local
    };
    let opts = DumpOptions {
        pid: a.pid,
        dir: a.dir,
        leave_running: a.leave_running,
        shell_job: a.shell_job,
        freeze_timeout: std::time::Duration::from_secs(a.timeout),
        pages_to,
        parent: a.prev_images_dir.clone(),
        track_mem: a.track_mem,
        pre_dump: false,
        tcp_established: a.tcp_established,
        tcp_skip_in_flight: a.skip_in_flight,
        tcp_close: a.tcp_close,
        network_lock: a.network_lock,
    };
    anyhow::ensure!(
        opts.parent.is_none() || opts.pages_to == PagesTo::Local,
        "--prev-images-dir works with local images only (not with --page-server or --lazy-pages)"
    );
    if !a.lazy_pages {
        let s = dump::dump(&opts).context("dump failed")?;
        log_summary(opts.pid, &s);
        return Ok(0);
    }
    // Listen before the dump: a port that cannot be had fails the dump
    // before the process is touched.
    let port = a.port.context("--lazy-pages needs --port PORT")?;
    let host = a.address.as_deref().unwrap_or("0.0.0.0");
    let listener = std::net::TcpListener::bind((host, port)).with_context(|| format!("listen on {host}:{port}"))?;
    let (s, mut held) = dump::dump_keeping_memory(&opts).context("dump failed")?;
    log_summary(opts.pid, &s);
    // Tells whoever waits for the images (they are complete now).
    println!("dump: {} pages held for lazy restore, serving on {}", held.pages(), listener.local_addr()?);
    let timeout = a.lazy_timeout.map(std::time::Duration::from_secs);
    let stats = dump::remote::serve_held(&listener, &mut held, timeout)
        .context("serving the lazy pages")?
        .with_context(|| format!("no lazy-pages client connected within {} s; the memory is lost", a.lazy_timeout.unwrap_or(0)))?;
    println!("dump: lazy pages served: {} pages sent in {} requests", stats.pages_got, stats.requests);
    // The client decides what it needs (pages unmapped meanwhile are never
    // asked for); fewer pages than held is worth a word, not a failure.
    if stats.pages_got < held.pages() {
        tracing::warn!("the lazy-pages client went away having fetched {} of {} held pages", stats.pages_got, held.pages());
    }
    Ok(0)
}
