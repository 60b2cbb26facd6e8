//! `criu-rs lazy-pages` and `criu-rs page-server`.

use anyhow::{Context, Result};
use criu_core::images::ImageDir;
use criu_core::lazy;
use criu_core::pageserver::{server, store::ImagesStore};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct LazyPagesArgs {
    /// Directory of the images (pagemaps; page data unless --page-server).
    #[arg(short = 'D', long = "images-dir", value_name = "DIR")]
    pub dir: PathBuf,
    /// Unix socket to listen on; with --page-server, the page server's host.
    #[arg(long = "address", value_name = "ADDR")]
    pub address: Option<String>,
    /// Fetch page data from a page server (--address, --port).
    #[arg(long = "page-server")]
    pub page_server: bool,
    /// Page server port (with --page-server).
    #[arg(long = "port", value_name = "PORT")]
    pub port: Option<u16>,
    /// Unix socket to listen on (default: DIR/lazy-pages.socket, or --address without --page-server).
    #[arg(long = "lazy-socket", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// KiB filled per fault (an aligned block around the faulting page).
    #[arg(long = "fault-chunk", value_name = "KIB", default_value = "16")]
    pub fault_chunk: u64,
    /// KiB per background copy.
    #[arg(long = "bg-chunk", value_name = "KIB", default_value = "1024")]
    pub bg_chunk: u64,
    /// Serve faults only; copy nothing in the background.
    #[arg(long = "no-background")]
    pub no_background: bool,
    /// Stay on the daemon's CPUs; by default, while faults come in, it runs
    /// on the CPU of the faulting thread (cheaper wake-ups).
    #[arg(long = "no-follow-cpu")]
    pub no_follow_cpu: bool,
    /// Number of tasks to wait for (default: from pstree.img or the pagemaps).
    #[arg(long = "tasks", value_name = "N")]
    pub tasks: Option<usize>,
    /// Seconds a task may take to register all its lazy ranges after the hand-over.
    #[arg(long = "register-timeout", value_name = "SECS", default_value = "30")]
    pub register_timeout: u64,
    /// Seconds to wait for the next task to connect.
    #[arg(long = "connect-timeout", value_name = "SECS", default_value = "60")]
    pub connect_timeout: u64,
}

#[derive(clap::Args)]
pub struct PageServerArgs {
    /// Directory to write received images to and serve pages from.
    #[arg(short = 'D', long = "images-dir", value_name = "DIR")]
    pub dir: PathBuf,
    /// Address to listen on.
    #[arg(long = "address", value_name = "ADDR", default_value = "0.0.0.0")]
    pub address: String,
    /// Port to listen on.
    #[arg(long = "port", value_name = "PORT")]
    pub port: u16,
}

pub fn lazy_pages(a: LazyPagesArgs) -> Result<i32> {
    let default_socket = || a.dir.join("lazy-pages.socket");
    let (socket, remote) = if a.page_server {
        let host = a.address.clone().context("--page-server needs --address HOST")?;
        let port = a.port.context("--page-server needs --port PORT")?;
        (a.socket.clone().unwrap_or_else(default_socket), Some(format!("{host}:{port}")))
    } else {
        let s = a.socket.clone().or_else(|| a.address.clone().map(PathBuf::from));
        (s.unwrap_or_else(default_socket), None)
    };
    let mut opts = lazy::Options::new(&a.dir, socket);
    opts.page_server = remote;
    opts.fault_chunk = (a.fault_chunk.max(4) * 1024).next_power_of_two();
    opts.bg_chunk = a.bg_chunk.max(4) * 1024;
    opts.background = !a.no_background;
    opts.tasks = a.tasks;
    opts.follow_cpu = !a.no_follow_cpu;
    opts.register_timeout = std::time::Duration::from_secs(a.register_timeout);
    opts.accept_timeout = std::time::Duration::from_secs(a.connect_timeout);
    let stats = lazy::run(opts).context("lazy-pages")?;
    println!("lazy-pages: {stats}");
    if stats.killed > 0 {
        tracing::error!("lazy-pages: {} task(s) had to be killed", stats.killed);
        return Ok(1);
    }
    Ok(0)
}

pub fn page_server(a: PageServerArgs) -> Result<i32> {
    std::fs::create_dir_all(&a.dir).with_context(|| format!("create {}", a.dir.display()))?;
    let listener = std::net::TcpListener::bind((a.address.as_str(), a.port))
        .with_context(|| format!("listen on {}:{}", a.address, a.port))?;
    tracing::info!("page server: listening on {}", listener.local_addr()?);
    let dir = ImageDir::open_unchecked(&a.dir);
    let mut store = ImagesStore::new(dir.clone());
    let stats = server::serve_one(&listener, Some(&dir), Some(&mut store)).context("page server")?;
    println!(
        "page-server: {} pages received, {} pages sent, {} requests",
        stats.pages_put, stats.pages_got, stats.requests
    );
    Ok(0)
}
