//! CRIU's command line: `criu-rs COMMAND [OPTION...]`, read as CRIU reads
//! it, so that scripts, container runtimes and CRIU's test driver can call
//! criu-rs in its place.
//!
//! Three steps:
//! - [`config`]: the configuration files, each overriding the ones before:
//!   `/etc/criu/default.conf`, `$HOME/.criu/default.conf` (both skipped
//!   with `--no-default-config` or `--config`), `$CRIU_CONFIG_FILE`,
//!   `--config FILE`, then the command line;
//! - [`normalize`]: CRIU's `getopt_long` rules (options before or after the
//!   command, `-v4`/`-vvv`, `--no-NAME`, prefixes, bundled short options,
//!   optional arguments only attached) turned into one canonical list;
//! - clap parses that list ([`table::clap_command`]) and each option's row
//!   of [`table::OPTIONS`] sets [`Opts`].
//!
//! Every option CRIU knows is in [`table::OPTIONS`] with what criu-rs does
//! with it: set a field of [`Opts`], accept it as a tuning of CRIU's
//! internals that cannot change criu-rs's result, or refuse it with "not
//! supported: --NAME" on the commands where it would change the result.

pub mod config;
pub mod normalize;
pub mod table;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A CRIU command criu-rs runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cmd {
    Dump,
    PreDump,
    Restore,
    Check,
    PageServer,
    LazyPages,
    Service,
}

impl Cmd {
    /// Every command, in help order.
    pub const ALL: &'static [Cmd] = &[Cmd::Dump, Cmd::PreDump, Cmd::Restore, Cmd::Check, Cmd::PageServer, Cmd::LazyPages, Cmd::Service];

    /// The command's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Cmd::Dump => "dump",
            Cmd::PreDump => "pre-dump",
            Cmd::Restore => "restore",
            Cmd::Check => "check",
            Cmd::PageServer => "page-server",
            Cmd::LazyPages => "lazy-pages",
            Cmd::Service => "service",
        }
    }

    /// What the command does, for `--help`.
    pub fn about(self) -> &'static str {
        match self {
            Cmd::Dump => "checkpoint a process tree into image files",
            Cmd::PreDump => "copy a running tree's memory and track what it writes next (for dump --prev-images-dir)",
            Cmd::Restore => "restore a process tree from image files",
            Cmd::Check => "report whether criu-rs can work here (kernel features)",
            Cmd::PageServer => "receive pages from a remote dump, or serve an images directory's pages",
            Cmd::LazyPages => "serve the memory of lazily restored tasks over userfaultfd",
            Cmd::Service => "serve CRIU's RPC (rpc.proto) on a unix socket (--address, default ./criu_service.socket)",
        }
    }
}

/// CRIU's commands criu-rs does not run.
const OTHER_COMMANDS: &[&str] = &["exec", "show", "dedup", "cpuinfo", "image-cache", "image-proxy"];

/// What the tasks are left as after a dump (`-R`, `-s`; the last one wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FinalState {
    /// Killed (dump's default).
    #[default]
    Dead,
    /// `--leave-running`.
    Running,
    /// `--leave-stopped`.
    Stopped,
}

/// Everything the command line and the configuration files said.
#[derive(Debug, Clone)]
pub struct Opts {
    /// `-v`: CRIU's log level (0 nothing .. 4 everything; more is 4).
    pub verbosity: i32,
    /// `-o`: the log file (relative to the work directory).
    pub log_file: Option<PathBuf>,
    /// `-D`: the images directory (default: the current directory).
    pub images_dir: Option<PathBuf>,
    /// `-W`: where logs, the pid file, the lazy-pages socket and
    /// `stats-restore` go (default: the images directory).
    pub work_dir: Option<PathBuf>,
    /// `--pidfile`: restored root / daemon pid (relative to the work directory).
    pub pidfile: Option<PathBuf>,
    /// `--status-fd`: written one NUL byte when ready, then closed.
    pub status_fd: Option<i32>,
    /// `--display-stats`.
    pub display_stats: bool,
    /// `--action-script`, in the order given.
    pub action_scripts: Vec<PathBuf>,
    /// `-t`.
    pub tree: Option<i32>,
    /// `-R` / `-s`.
    pub final_state: FinalState,
    /// `-j`.
    pub shell_job: bool,
    /// `--timeout`: seconds to freeze the tree.
    pub timeout: u64,
    /// `--page-server` (dump, pre-dump, lazy-pages).
    pub page_server: bool,
    /// `--address`.
    pub address: Option<String>,
    /// `--port`.
    pub port: Option<u16>,
    /// `--prev-images-dir`.
    pub prev_images_dir: Option<PathBuf>,
    /// `--track-mem`.
    pub track_mem: bool,
    /// `--[no-]live-copy` (criu-rs's own; on by default).
    pub live_copy: bool,
    /// `--lazy-pages`.
    pub lazy_pages: bool,
    /// `-x` / `--ext-unix-sk[=INODE,...]`: `Some(empty)` for all.
    pub ext_unix_sk: Option<Vec<u64>>,
    /// `--tcp-established`.
    pub tcp_established: bool,
    /// `--skip-in-flight`.
    pub tcp_skip_in_flight: bool,
    /// `--tcp-close`.
    pub tcp_close: bool,
    /// `--network-lock`.
    pub network_lock: criu_core::net::lock::LockMethod,
    /// `-l` / `--file-locks`.
    pub file_locks: bool,
    /// `--link-remap`.
    pub link_remap: bool,
    /// `--ghost-limit` in bytes (`None`: the engine's default).
    pub ghost_limit: Option<u64>,
    /// `--external`, as given.
    pub external: Vec<String>,
    /// `--inherit-fd fd[N]:KEY`.
    pub inherit_fd: Vec<criu_core::restore::InheritFd>,
    /// `-d` / `--restore-detached` / `--daemon`.
    pub detach: bool,
    /// `-S` / `--restore-sibling`.
    pub restore_sibling: bool,
    /// `--watch MS` (criu-rs's): how long restore watches the restored
    /// tasks after their release (None: 2 s, or 0 with `-d`).
    pub watch_ms: Option<u64>,
    /// `-r` / `--root`.
    pub root: Option<PathBuf>,
    /// `--manage-cgroups[=MODE]`.
    pub manage_cgroups: Option<String>,
    /// `--cpu-cap[=CAPS]` as given (`""` without a value).
    pub cpu_cap: Option<String>,
    /// `--feature NAME` (check; several allowed, all must hold).
    pub features: Vec<String>,
    /// `--extra` (check category 2).
    pub check_extra: bool,
    /// `--experimental` (check category 3).
    pub check_experimental: bool,
    /// `--close FD`, done before the command runs.
    pub close_fds: Vec<i32>,
    /// criu-rs: `restore --verify`.
    pub verify: bool,
    /// criu-rs: `dump --lazy-pages --lazy-timeout SECONDS`.
    pub lazy_timeout: Option<u64>,
    /// criu-rs: `lazy-pages --lazy-socket PATH`.
    pub lazy_socket: Option<PathBuf>,
    /// criu-rs: `lazy-pages --fault-chunk KIB`.
    pub fault_chunk: u64,
    /// criu-rs: `lazy-pages --bg-chunk KIB`.
    pub bg_chunk: u64,
    /// criu-rs: `lazy-pages --no-background`.
    pub no_background: bool,
    /// criu-rs: `lazy-pages --no-follow-cpu`.
    pub no_follow_cpu: bool,
    /// criu-rs: `lazy-pages --tasks N`.
    pub tasks: Option<usize>,
    /// criu-rs: `lazy-pages --register-timeout SECS`.
    pub register_timeout: u64,
    /// criu-rs: `lazy-pages --connect-timeout SECS`.
    pub connect_timeout: u64,
    /// criu-rs: `restore --mmap-page-image`.
    pub mmap_page_image: bool,
    /// criu-rs: `restore --finish-mmap PID`.
    pub finish_mmap: Option<i32>,
    /// Options given that criu-rs refuses where they matter: long name ->
    /// (the option as written, commands where refused, why).
    pub refused: BTreeMap<&'static str, (String, &'static [Cmd], &'static str)>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            verbosity: 2,
            log_file: None,
            images_dir: None,
            work_dir: None,
            pidfile: None,
            status_fd: None,
            display_stats: false,
            action_scripts: Vec::new(),
            tree: None,
            final_state: FinalState::Dead,
            shell_job: false,
            timeout: 10,
            page_server: false,
            address: None,
            port: None,
            prev_images_dir: None,
            track_mem: false,
            live_copy: true,
            lazy_pages: false,
            ext_unix_sk: None,
            tcp_established: false,
            tcp_skip_in_flight: false,
            tcp_close: false,
            network_lock: Default::default(),
            file_locks: false,
            link_remap: false,
            ghost_limit: None,
            external: Vec::new(),
            inherit_fd: Vec::new(),
            detach: false,
            restore_sibling: false,
            watch_ms: None,
            root: None,
            manage_cgroups: None,
            cpu_cap: None,
            features: Vec::new(),
            check_extra: false,
            check_experimental: false,
            close_fds: Vec::new(),
            verify: false,
            lazy_timeout: None,
            lazy_socket: None,
            fault_chunk: 16,
            bg_chunk: 1024,
            no_background: false,
            no_follow_cpu: false,
            tasks: None,
            register_timeout: 30,
            connect_timeout: 60,
            mmap_page_image: false,
            finish_mmap: None,
            refused: BTreeMap::new(),
        }
    }
}

impl Opts {
    /// The log level for `tracing` (CRIU's 0..4; above 4 is 4).
    pub fn level(&self) -> u8 {
        self.verbosity.clamp(0, 4) as u8
    }

    /// `-D`, or the current directory.
    pub fn images_dir(&self) -> PathBuf {
        self.images_dir.clone().unwrap_or_else(|| PathBuf::from("."))
    }

    /// `-W`, or the images directory (as CRIU, which changes into it).
    pub fn work_dir(&self) -> PathBuf {
        self.work_dir.clone().unwrap_or_else(|| self.images_dir())
    }

    /// `path` relative to the work directory (CRIU opens the log, the pid
    /// file and the lazy-pages socket there).
    pub fn in_work_dir(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.work_dir().join(path)
        }
    }

    /// Refuses the options given that criu-rs does not support for `cmd`.
    pub fn check_refused(&self, cmd: Cmd) -> Result<(), String> {
        for (given, on, why) in self.refused.values() {
            if on.contains(&cmd) {
                return Err(format!("not supported: {given} ({why})"));
            }
        }
        Ok(())
    }
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Run a command.
    Run(Cmd),
    /// Print this (help or version) and exit 0.
    Print(String),
}

/// Parses `args` (without the program name) after the configuration files
/// ([`config::sources`]), in CRIU's order.
pub fn parse(args: &[String]) -> Result<(Request, Opts), String> {
    let mut occurrences = Vec::new();
    // --help wins over anything, even a broken configuration file.
    let wants_help = args.iter().take_while(|a| *a != "--").any(|a| a == "--help" || a == "-h");
    if !wants_help {
        for src in config::sources(args)? {
            let words = config::read(&src)?;
            let mut extra = Vec::new();
            normalize::tokenize(&words, &mut occurrences, &mut extra).map_err(|e| format!("{}: {e}", src.display()))?;
            if let Some(p) = extra.first() {
                return Err(format!("{}: {p:?} is not an option (commands are not allowed in configuration files)", src.display()));
            }
        }
    }
    let mut positional = Vec::new();
    normalize::tokenize(args, &mut occurrences, &mut positional)?;
    let mut words: Vec<String> = Vec::new();
    match positional.first().map(String::as_str) {
        None => {}
        // `help [COMMAND]`: that command's --help.
        Some("help") => {
            positional = positional.get(1).filter(|c| find_cmd(c).is_some()).cloned().into_iter().collect();
            occurrences.retain(|o| o.opt.long == "help");
            positional.push("--help".into());
        }
        Some(name) if find_cmd(name).is_some() => {
            if positional.len() > 1 {
                let n = positional.len() - 1;
                return Err(format!("excessive parameter{} for command {name}: {}", if n > 1 { "s" } else { "" }, positional[1..].join(" ")));
            }
        }
        Some(name) if OTHER_COMMANDS.contains(&name) => {
            return Err(format!("not supported: command {name:?} (criu-rs runs dump, pre-dump, restore, check, page-server, lazy-pages, service and swrk)"))
        }
        Some(name) => return Err(format!("unknown command {name:?} (dump, pre-dump, restore, check, page-server, lazy-pages, service)")),
    }
    words.extend(positional.iter().cloned());
    words.extend(normalize::canonical(&occurrences));
    if positional.is_empty() && !wants_help && !occurrences.iter().any(|o| o.opt.long == "version") {
        return Err("no command given (dump, pre-dump, restore, check, page-server, lazy-pages, service); see --help".into());
    }
    let m = match table::clap_command().try_get_matches_from(std::iter::once("criu-rs".to_string()).chain(words)) {
        Ok(m) => m,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => {
            return Ok((Request::Print(e.render().to_string()), Opts::default()));
        }
        Err(e) => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("bad command line");
            return Err(first.trim_start_matches("error: ").to_string());
        }
    };
    let (name, sub) = m.subcommand().ok_or("no command given")?;
    let cmd = find_cmd(name).ok_or_else(|| format!("unknown command {name:?}"))?;
    let mut opts = Opts::default();
    table::apply(sub, &mut opts)?;
    Ok((Request::Run(cmd), opts))
}

fn find_cmd(name: &str) -> Option<Cmd> {
    Cmd::ALL.iter().copied().find(|c| c.name() == name)
}

#[cfg(test)]
mod tests;
