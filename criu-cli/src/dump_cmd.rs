//! `criu-rs dump` and `pre-dump`: local images, `--page-server` (pages sent
//! to a remote `criu-rs page-server`) or `--lazy-pages` (memory kept here
//! and served to `criu-rs lazy-pages --page-server` after the process is
//! gone).

use anyhow::{bail, Context, Result};
use criu_core::actions::Action;
use criu_core::dump::{self, remote::PagesTo, DumpOptions, DumpSummary};
use std::time::Duration;

use crate::cli::{Cmd, FinalState, Opts};
use crate::stages::Stages;

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

/// Refuses option values criu-rs cannot honour on a dump or restore.
pub fn check_values(o: &Opts) -> Result<()> {
    if let Some(mode) = o.manage_cgroups.as_deref().filter(|m| *m != "ignore") {
        bail!("not supported: --manage-cgroups={mode} (criu-rs does not dump or restore cgroups; it does what --manage-cgroups=ignore says)");
    }
    Ok(())
}

/// The engine's options from the command line.
fn options(o: &Opts, cmd: Cmd, pid: i32, stages: &std::sync::Arc<Stages>) -> Result<DumpOptions> {
    let mut d = DumpOptions::new(pid, o.images_dir());
    d.pre_dump = cmd == Cmd::PreDump;
    d.leave_running = o.final_state == FinalState::Running || d.pre_dump;
    d.leave_stopped = o.final_state == FinalState::Stopped && !d.pre_dump;
    d.shell_job = o.shell_job || d.pre_dump;
    d.freeze_timeout = Duration::from_secs(o.timeout);
    d.parent = o.prev_images_dir.clone();
    d.track_mem = o.track_mem || d.pre_dump;
    d.live = o.live_copy;
    d.ext_unix_sk = o.ext_unix_sk.clone();
    d.tcp_established = o.tcp_established;
    d.tcp_skip_in_flight = o.tcp_skip_in_flight;
    d.tcp_close = o.tcp_close;
    d.network_lock = o.network_lock;
    d.file_locks = o.file_locks;
    d.link_remap = o.link_remap;
    if let Some(limit) = o.ghost_limit {
        d.ghost_limit = limit;
    }
    d.external = o.external.clone();
    d.actions = Some(stages.hook());
    d.pages_to = if o.page_server {
        if d.pre_dump {
            bail!("not supported: pre-dump --page-server (pre-dump writes its pages locally)");
        }
        let host = o.address.as_deref().context("--page-server needs --address HOST")?;
        let port = o.port.context("--page-server needs --port PORT")?;
        PagesTo::PageServer(format!("{host}:{port}"))
    } else if o.lazy_pages {
        PagesTo::Held
    } else {
        if o.port.is_some() || o.address.is_some() {
            bail!("--address/--port need --page-server or --lazy-pages");
        }
        PagesTo::Local
    };
    if d.parent.is_some() && d.pages_to != PagesTo::Local {
        bail!("--prev-images-dir works with local images only (not with --page-server or --lazy-pages)");
    }
    Ok(d)
}

/// `criu-rs dump` / `pre-dump`.
pub fn dump(cmd: Cmd, o: &Opts) -> Result<i32> {
    check_values(o)?;
    let pid = o.tree.context("a process to dump is needed: -t PID")?;
    let stages = Stages::new(&o.action_scripts, &o.images_dir(), o.status_fd);
    let opts = options(o, cmd, pid, &stages)?;
    let what = if opts.pre_dump { "pre-dump failed" } else { "dump failed" };
    if !opts.pre_dump {
        stages.run(Action::PreDump, Some(pid)).context("pre-dump script failed")?;
    }
    if opts.pages_to != PagesTo::Held {
        let s = dump::dump(&opts).context(what)?;
        log_summary(pid, &s);
        display(o, &s);
        return Ok(0);
    }
    // Listen before the dump: a port that cannot be had fails the dump
    // before the process is touched.
    let port = o.port.context("--lazy-pages needs --port PORT")?;
    let host = o.address.as_deref().unwrap_or("0.0.0.0");
    let listener = std::net::TcpListener::bind((host, port)).with_context(|| format!("listen on {host}:{port}"))?;
    let (s, mut held) = dump::dump_keeping_memory(&opts).context(what)?;
    log_summary(pid, &s);
    display(o, &s);
    // Tells whoever waits for the images (they are complete now).
    println!("dump: {} pages held for lazy restore, serving on {}", held.pages(), listener.local_addr()?);
    tracing::info!("page server: serving {} lazy pages on {}", held.pages(), listener.local_addr()?);
    stages.run(Action::StatusReady, Some(pid))?;
    let timeout = o.lazy_timeout.map(Duration::from_secs);
    let stats = dump::remote::serve_held(&listener, &mut held, timeout)
        .context("serving the lazy pages")?
        .with_context(|| format!("no lazy-pages client connected within {} s; the memory is lost", o.lazy_timeout.unwrap_or(0)))?;
    println!("dump: lazy pages served: {} pages sent in {} requests", stats.pages_got, stats.requests);
    // The client decides what it needs (pages unmapped meanwhile are never
    // asked for); fewer pages than held is worth a word, not a failure.
    if stats.pages_got < held.pages() {
        tracing::warn!("the lazy-pages client went away having fetched {} of {} held pages", stats.pages_got, held.pages());
    }
    Ok(0)
}

/// `--display-stats`: CRIU's lines on stdout.
fn display(o: &Opts, s: &DumpSummary) {
    if o.display_stats {
        print!("{}", criu_core::stats::display(&criu_core::stats::dump_entry(s)));
    }
}
