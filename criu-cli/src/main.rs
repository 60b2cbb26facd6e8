//! `criu-rs`: the command line. Option names follow CRIU's.

mod dump_cmd;
mod lazy_cmd;
mod log;
mod progress;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "criu-rs", version, about = "Checkpoint/restore in userspace for Linux")]
struct Cli {
    /// Log verbosity, 0 (errors only) .. 4 (everything), as CRIU's -v.
    #[arg(short = 'v', global = true, value_name = "LEVEL", default_value = "2",
          value_parser = clap::value_parser!(u8).range(0..=4))]
    verbosity: u8,
    /// Write the log to FILE (relative to the images directory, as in CRIU, when -D is given).
    #[arg(short = 'o', long = "log-file", global = true, value_name = "FILE")]
    log_file: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Checkpoint a process tree into image files.
    Dump(DumpArgs),
    /// Copy a running tree's memory and track what it writes next, for a
    /// later dump with --prev-images-dir (the tree keeps running).
    PreDump(PreDumpArgs),
    /// Restore a process tree from image files.
    Restore(RestoreArgs),
    /// Report the kernel features criu-rs relies on.
    Check(CheckArgs),
    /// Serve the memory of lazily restored tasks over userfaultfd.
    LazyPages(lazy_cmd::LazyPagesArgs),
    /// Receive pages from a remote dump, or serve pages for post-copy.
    PageServer(lazy_cmd::PageServerArgs),
}

#[derive(clap::Args)]
pub(crate) struct DumpArgs {
    /// Pid of the root of the tree to dump.
    #[arg(short = 't', long = "tree", value_name = "PID")]
    pid: i32,
    /// Directory to write the images to.
    #[arg(short = 'D', long = "images-dir", value_name = "DIR")]
    dir: PathBuf,
    /// Let the tree run on after the dump instead of killing it.
    #[arg(short = 'R', long = "leave-running")]
    leave_running: bool,
    /// Allow dumping a tree attached to a terminal session.
    #[arg(short = 'j', long = "shell-job")]
    shell_job: bool,
    /// Seconds to wait for every thread to stop before giving up.
    #[arg(long = "timeout", value_name = "SECONDS", default_value = "10")]
    timeout: u64,
    /// Send the pages to `criu-rs page-server` at --address/--port instead of writing them.
    #[arg(long = "page-server", conflicts_with = "lazy_pages")]
    page_server: bool,
    /// Keep the memory here and serve it to `criu-rs lazy-pages --page-server` (post-copy).
    #[arg(long = "lazy-pages")]
    lazy_pages: bool,
    /// Page server host (--page-server), or the address to listen on (--lazy-pages; default 0.0.0.0).
    #[arg(long = "address", value_name = "ADDR")]
    address: Option<String>,
    /// Page server port (--page-server), or the port to listen on (--lazy-pages).
    #[arg(long = "port", value_name = "PORT")]
    port: Option<u16>,
    /// With --lazy-pages: give up when no lazy-pages client connects within SECONDS.
    #[arg(long = "lazy-timeout", value_name = "SECONDS")]
    lazy_timeout: Option<u64>,
    /// The parent dump (a pre-dump), relative to the images directory:
    /// pages not written since it are left there.
    #[arg(long = "prev-images-dir", value_name = "DIR")]
    prev_images_dir: Option<PathBuf>,
    /// Keep tracking written pages for a later dump (with --leave-running).
    #[arg(long = "track-mem")]
    track_mem: bool,
    /// Dump established TCP connections (through TCP repair mode).
    #[arg(long = "tcp-established")]
    tcp_established: bool,
    /// Leave out TCP connections not accepted yet and datagrams waiting.
    #[arg(long = "skip-in-flight")]
    skip_in_flight: bool,
    /// Dump TCP connections as closed ones.
    #[arg(long = "tcp-close")]
    tcp_close: bool,
    /// How connections are locked while the tree is down: iptables, nftables or skip.
    #[arg(long = "network-lock", value_name = "METHOD", default_value = "iptables")]
    network_lock: criu_core::net::lock::LockMethod,
}

#[derive(clap::Args)]
pub(crate) struct PreDumpArgs {
    /// Pid of the root of the tree.
    #[arg(short = 't', long = "tree", value_name = "PID")]
    pid: i32,
    /// Directory to write the images to.
    #[arg(short = 'D', long = "images-dir", value_name = "DIR")]
    dir: PathBuf,
    /// The previous pre-dump, relative to the images directory.
    #[arg(long = "prev-images-dir", value_name = "DIR")]
    prev_images_dir: Option<PathBuf>,
    /// Accepted for CRIU compatibility: a pre-dump always tracks memory.
    #[arg(long = "track-mem")]
    track_mem: bool,
    /// Accepted for CRIU compatibility (a pre-dump never restores sessions).
    #[arg(short = 'j', long = "shell-job")]
    shell_job: bool,
    /// Seconds to wait for every thread to stop before giving up.
    #[arg(long = "timeout", value_name = "SECONDS", default_value = "10")]
    timeout: u64,
}

#[derive(clap::Args)]
struct RestoreArgs {
    /// Directory to read the images from.
    #[arg(short = 'D', long = "images-dir", value_name = "DIR")]
    dir: PathBuf,
    /// Detach once the tree is restored instead of waiting for it.
    #[arg(short = 'd', long = "restore-detached")]
    detached: bool,
    /// Write the restored root's pid to FILE.
    #[arg(long = "pidfile", value_name = "FILE")]
    pidfile: Option<PathBuf>,
    /// Allow restoring a tree attached to a terminal session.
    #[arg(short = 'j', long = "shell-job")]
    shell_job: bool,
    /// Start the tasks without their lazy memory; `criu-rs lazy-pages` fills it.
    #[arg(long = "lazy-pages")]
    lazy_pages: bool,
    /// With --lazy-pages: the lazy-pages daemon's socket (default DIR/lazy-pages.socket).
    #[arg(long = "address", value_name = "SOCKET", requires = "lazy_pages")]
    address: Option<PathBuf>,
    /// Restore established TCP connections (dumped with --tcp-established).
    #[arg(long = "tcp-established")]
    tcp_established: bool,
    /// Restore TCP connections closed.
    #[arg(long = "tcp-close")]
    tcp_close: bool,
}

#[derive(clap::Args)]
struct CheckArgs {
    /// Check one feature only; exit 0 when it is supported.
    #[arg(long = "feature", value_name = "NAME")]
    feature: Option<String>,
}

fn main() {
    let cli = Cli::parse();
    let dir = match &cli.cmd {
        Cmd::Dump(a) => Some(a.dir.clone()),
        Cmd::PreDump(a) => Some(a.dir.clone()),
        Cmd::Restore(a) => Some(a.dir.clone()),
        Cmd::Check(_) => None,
        Cmd::LazyPages(a) => Some(a.dir.clone()),
        Cmd::PageServer(a) => Some(a.dir.clone()),
    };
    let log = match log::init(cli.verbosity, cli.log_file.as_deref(), dir.as_deref()) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("Error: {}", log::one_line(&e));
            std::process::exit(1);
        }
    };
    progress::install();
    let code = match run(cli.cmd) {
        Ok(code) => code,
        Err(e) => {
            log.error(&e);
            1
        }
    };
    std::process::exit(code);
}

fn run(cmd: Cmd) -> Result<i32> {
    match cmd {
        Cmd::Dump(a) => dump_cmd::dump(a),
        Cmd::PreDump(a) => dump_cmd::pre_dump(a),
        Cmd::Restore(a) => {
            let lazy_pages = a.lazy_pages.then(|| a.address.clone().unwrap_or_else(|| a.dir.join("lazy-pages.socket")));
            let opts = criu_core::restore::RestoreOptions { dir: a.dir, shell_job: a.shell_job, lazy_pages, tcp_established: a.tcp_established, tcp_close: a.tcp_close };
            let r = criu_core::restore::restore(&opts).context("restore failed")?;
            if let Some(pidfile) = &a.pidfile {
                std::fs::write(pidfile, format!("{}\n", r.pid))
                    .with_context(|| format!("writing the pid file {}", pidfile.display()))?;
            }
            if a.detached {
                return Ok(0);
            }
            // As CRIU: wait for the restored task and exit with its status.
            Ok(criu_core::restore::wait_exit(r.pid)?)
        }
        Cmd::Check(a) => check(a.feature.as_deref()),
        Cmd::LazyPages(a) => lazy_cmd::lazy_pages(a),
        Cmd::PageServer(a) => lazy_cmd::page_server(a),
    }
}

/// `criu-rs check [--feature NAME]`: probe the kernel, as `criu check`.
fn check(feature: Option<&str>) -> Result<i32> {
    use criu_core::check;
    if let Some(name) = feature {
        let Some(f) = check::find(name) else {
            let names: Vec<&str> = check::FEATURES.iter().map(|f| f.name).collect();
            anyhow::bail!("unknown feature {name:?}; known features: {}", names.join(", "));
        };
        return Ok(match f.check().result {
            Ok(()) => {
                println!("{name} is supported");
                0
            }
            Err(why) => {
                println!("{name} is NOT supported: {why}");
                println!("  disables: {}", f.disables);
                1
            }
        });
    }
    let mut missing = 0;
    for r in check::check_all() {
        match &r.result {
            Ok(()) => println!("{:<16} yes  {}", r.feature.name, r.feature.what),
            Err(why) => {
                // soft-dirty is optional: its absence disables nothing.
                if r.feature.name != "soft_dirty" {
                    missing += 1;
                }
                println!("{:<16} NO   {}", r.feature.name, r.feature.what);
                println!("{:<16}      {why}", "");
                println!("{:<16}      disables: {}", "", r.feature.disables);
            }
        }
    }
    if missing == 0 {
        println!("Looks good.");
        Ok(0)
    } else {
        println!("{missing} feature(s) missing: the features listed as disabled will not work.");
        Ok(1)
    }
}
