//! `criu-rs`: CRIU's command line ([`cli`]) over criu-core.

mod check_cmd;
mod cli;
mod dump_cmd;
mod lazy_cmd;
mod log;
mod progress;
mod restore_cmd;
mod stages;
mod swrk;

use anyhow::Result;
use cli::{Cmd, Opts, Request};

fn main() {
    let args: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    // `criu swrk FD`: for RPC clients, which exec it with exactly this.
    if args.first().map(String::as_str) == Some("swrk") {
        std::process::exit(swrk::swrk(&args[1..]));
    }
    let (request, opts) = match cli::parse(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::exit(1);
        }
    };
    let cmd = match request {
        Request::Print(text) => {
            print!("{text}");
            std::process::exit(0);
        }
        Request::Run(cmd) => cmd,
    };
    for &fd in &opts.close_fds {
        // SAFETY: `--close FD` asks for exactly this, before anything else
        // runs; nothing in this process owns FD yet.
        unsafe { libc::close(fd) };
    }
    let work = (!matches!(cmd, Cmd::Check | Cmd::Service) || opts.images_dir.is_some() || opts.work_dir.is_some()).then(|| opts.work_dir());
    let label = if opts.work_dir.is_some() { "work directory" } else { "images directory" };
    let log = match log::init(opts.level(), opts.log_file.as_deref(), work.as_deref(), label) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("Error: {}", log::one_line(&e));
            std::process::exit(1);
        }
    };
    progress::install();
    let code = match run(cmd, &opts) {
        Ok(code) => code,
        Err(e) => {
            log.error(&e);
            exit_code(&e)
        }
    };
    std::process::exit(code);
}

/// The exit code for a failed command: a failed action script's status
/// (as CRIU), else 1.
fn exit_code(e: &anyhow::Error) -> i32 {
    e.chain()
        .find_map(|c| c.downcast_ref::<criu_core::actions::ActionFailed>().map(|f| f.code))
        .filter(|&c| c != 0)
        .unwrap_or(1)
}

fn run(cmd: Cmd, opts: &Opts) -> Result<i32> {
    opts.check_refused(cmd).map_err(anyhow::Error::msg)?;
    tracing::debug!(command = cmd.name(), "criu-rs {}", env!("CARGO_PKG_VERSION"));
    match cmd {
        Cmd::Dump | Cmd::PreDump => dump_cmd::dump(cmd, opts),
        Cmd::Restore => restore_cmd::restore(opts),
        Cmd::Check => check_cmd::check(opts),
        Cmd::LazyPages => lazy_cmd::lazy_pages(opts),
        Cmd::PageServer => lazy_cmd::page_server(opts),
        Cmd::Service => swrk::service(opts),
    }
}
