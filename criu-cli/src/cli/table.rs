//! Every option of CRIU 4.2 (criu/config.c's `long_opts` and short
//! options, the man page's spelling), and criu-rs's own few, with what
//! criu-rs does with each. One row per option; the parser
//! ([`super::getopt`]) and `--help` read this table only.
//!
//! An option criu-rs does not implement is refused with "not supported:
//! --NAME" on the commands where it would change the result
//! ([`Effect::Refused`], or a check in the command for some values). An
//! option that only tunes how CRIU works inside, or grants a permission for
//! something criu-rs refuses anyway, is accepted ([`Effect::Tuning`], with
//! the reason). Options for the engine's next features (sockets, stopped
//! tasks) reach criu-core's options structs, and criu-core refuses them
//! until it does them.

use super::{Cmd, FinalState, Opts};
use Cmd::{Check, Dump, LazyPages, PageServer, PreDump, Restore};

/// The argument an option takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// None.
    None,
    /// Always (attached with `=` or the next word); its name in help.
    Required(&'static str),
    /// Only attached (`--name=V`, `-xV`); its name in help.
    Optional(&'static str),
}

/// Sets fields of [`Opts`]: `(opts, value, on)`, `on` false for `--no-NAME`.
pub type Setter = fn(&mut Opts, Option<&str>, bool) -> Result<(), String>;

/// What criu-rs does with an option.
#[derive(Clone, Copy)]
pub enum Effect {
    /// It has an effect.
    Set(Setter),
    /// Accepted: it cannot change criu-rs's result (why).
    Tuning(&'static str),
    /// Refused on these commands, where it would change the result (why).
    Refused(&'static [Cmd], &'static str),
}

/// One option.
pub struct Opt {
    /// Long name (`--NAME`).
    pub long: &'static str,
    /// Short name (`-C`).
    pub short: Option<char>,
    /// Its argument.
    pub arg: Arg,
    /// A boolean with a `--no-NAME` form (CRIU's `BOOL_OPT`).
    pub negatable: bool,
    /// Each value counts (`--action-script A --action-script B`), not only
    /// the last.
    pub repeat: bool,
    /// The commands it is for (empty: every command), for `--help`.
    pub cmds: &'static [Cmd],
    /// What criu-rs does with it.
    pub effect: Effect,
    /// One line of help.
    pub help: &'static str,
}

const ALL: &[Cmd] = &[];
const DUMPS: &[Cmd] = &[Dump, PreDump];
const DUMP_RESTORE: &[Cmd] = &[Dump, PreDump, Restore];
const RESTORE: &[Cmd] = &[Restore];
const NETWORKED: &[Cmd] = &[Dump, PreDump, PageServer, LazyPages];

const NO_MNTNS: &str = "criu-rs dumps and restores no mount namespace";
const NO_NETNS: &str = "criu-rs dumps and restores no network namespace";
const NO_CGROUPS: &str = "criu-rs does not dump or restore cgroups";

fn number<T: std::str::FromStr>(v: Option<&str>) -> Result<T, String> {
    let v = v.unwrap_or("");
    v.trim().parse().map_err(|_| format!("invalid number {v:?}"))
}

fn path(v: Option<&str>) -> std::path::PathBuf {
    std::path::PathBuf::from(v.unwrap_or(""))
}

/// `--ghost-limit SIZE`: bytes, or with a K, M or G suffix.
fn size(v: Option<&str>) -> Result<u64, String> {
    let v = v.unwrap_or("").trim();
    let (digits, mult) = match v.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (v, 1),
        Some((i, c)) => {
            let mult = match c {
                'K' | 'k' => 1 << 10,
                'M' | 'm' => 1 << 20,
                'G' | 'g' => 1 << 30,
                _ => return Err(format!("invalid size {v:?} (bytes, or with K, M or G)")),
            };
            if v.len() != i + 1 {
                return Err(format!("invalid size {v:?} (bytes, or with K, M or G)"));
            }
            (&v[..i], mult)
        }
    };
    let n: u64 = digits.parse().map_err(|_| format!("invalid size {v:?}"))?;
    n.checked_mul(mult).ok_or_else(|| format!("size {v:?} too large"))
}

fn one_of(v: Option<&str>, allowed: &[&str]) -> Result<(), String> {
    let v = v.unwrap_or("");
    if allowed.contains(&v) {
        Ok(())
    } else {
        Err(format!("unknown value {v:?} (one of {})", allowed.join(", ")))
    }
}

/// `--verbosity=N`.
fn verbosity(o: &mut Opts, v: Option<&str>, _: bool) -> Result<(), String> {
    // The normalization pass turned -v, -vvv, -vN... into one absolute level.
    o.verbosity = number(v)?;
    Ok(())
}

/// `--inherit-fd fd[N]:KEY`.
fn inherit_fd(o: &mut Opts, v: Option<&str>, _: bool) -> Result<(), String> {
    let v = v.unwrap_or("");
    let bad = || format!("{v:?} is not fd[N]:RESOURCE");
    let rest = v.strip_prefix("fd[").ok_or_else(bad)?;
    let (n, key) = rest.split_once("]:").ok_or_else(bad)?;
    let fd: i32 = n.parse().map_err(|_| bad())?;
    if fd < 0 || key.is_empty() {
        return Err(bad());
    }
    o.inherit_fd.push(criu_core::restore::InheritFd { fd, key: key.to_string() });
    Ok(())
}

/// `--cpu-cap[=CAPS]`: CRIU's syntax (`fpu`, `cpu`, `ins`, `all`, `none`,
/// `^` inverts, `,` separates).
fn cpu_cap(o: &mut Opts, v: Option<&str>, _: bool) -> Result<(), String> {
    let caps = v.unwrap_or("");
    for word in caps.split(',').filter(|w| !w.is_empty()) {
        let w = word.trim_start_matches('^');
        if !["fpu", "cpu", "ins", "all", "none"].contains(&w) {
            return Err(format!("unknown CPU capability {word:?} (fpu, cpu, ins, all, none)"));
        }
    }
    o.cpu_cap = Some(caps.to_string());
    Ok(())
}

macro_rules! set {
    (|$o:ident, $v:ident, $on:ident| $body:expr) => {
        Effect::Set(|$o: &mut Opts, $v: Option<&str>, $on: bool| {
            let _ = (&$o, &$v, &$on);
            $body
        })
    };
}

const fn opt(long: &'static str, short: Option<char>, arg: Arg, cmds: &'static [Cmd], effect: Effect, help: &'static str) -> Opt {
    Opt { long, short, arg, negatable: false, repeat: false, cmds, effect, help }
}

const fn flag(long: &'static str, short: Option<char>, cmds: &'static [Cmd], effect: Effect, help: &'static str) -> Opt {
    Opt { long, short, arg: Arg::None, negatable: true, repeat: false, cmds, effect, help }
}

impl Opt {
    /// Every value counts, in order.
    const fn many(mut self) -> Self {
        self.repeat = true;
        self
    }
}

use Arg::{None as NoArg, Optional, Required};

/// Every option, CRIU's first (in criu/config.c's order), then criu-rs's.
pub static OPTIONS: &[Opt] = &[
    opt("tree", Some('t'), Required("PID"), DUMPS, set!(|o, v, on| {
        // A number; whether a process has it is the dump's to say.
        let pid: i32 = v.unwrap_or("").trim().parse().map_err(|_| format!("invalid pid {:?}", v.unwrap_or("")))?;
        o.tree = Some(pid);
        Ok(())
    }), "the root of the process tree to dump"),
    opt("leave-stopped", Some('s'), NoArg, DUMP_RESTORE, set!(|o, v, on| { o.final_state = FinalState::Stopped; Ok(()) }),
        "leave the tasks stopped after dump or restore"),
    opt("leave-running", Some('R'), NoArg, DUMPS, set!(|o, v, on| { o.final_state = FinalState::Running; Ok(()) }),
        "let the tree run on after the dump instead of killing it"),
    flag("restore-detached", Some('d'), &[Restore, PageServer, LazyPages], set!(|o, v, on| { o.detach = on; Ok(()) }),
        "restore: exit once the tree runs; page-server, lazy-pages: run in the background"),
    flag("restore-sibling", Some('S'), RESTORE, set!(|o, v, on| { o.restore_sibling = on; Ok(()) }),
        "restore the root as a sibling of criu-rs (a child of criu-rs's parent; needs -d)"),
    flag("daemon", None, &[Restore, PageServer, LazyPages], set!(|o, v, on| { o.detach = on; Ok(()) }),
        "same as --restore-detached"),
    opt("watch", None, Required("MS"), RESTORE, set!(|o, v, on| { o.watch_ms = Some(number(v)?); Ok(()) }),
        "(criu-rs) trace the restored tasks for MS ms after their release and report one that dies of a signal \
         (default 2000, 0 with -d)"),
    opt("images-dir", Some('D'), Required("DIR"), ALL, set!(|o, v, on| { o.images_dir = Some(path(v)); Ok(()) }),
        "the images directory (default: the current directory)"),
    opt("work-dir", Some('W'), Required("DIR"), ALL, set!(|o, v, on| { o.work_dir = Some(path(v)); Ok(()) }),
        "where logs, the pid file and stats-restore go (default: the images directory)"),
    opt("log-file", Some('o'), Required("FILE"), ALL, set!(|o, v, on| { o.log_file = Some(path(v)); Ok(()) }),
        "write the log to FILE (relative to the work directory)"),
    opt("join-ns", Some('J'), Required("NS:PID|FILE"), RESTORE, Effect::Refused(RESTORE, "criu-rs restores into its own namespaces"),
        "restore into an existing namespace").many(),
    opt("root", Some('r'), Required("DIR"), RESTORE, set!(|o, v, on| { o.root = Some(path(v)); Ok(()) }),
        "the root directory to restore into (only / is supported)"),
    opt("ext-unix-sk", Some('x'), Optional("INODE,..."), DUMP_RESTORE, set!(|o, v, on| {
        let mut ids = o.ext_unix_sk.take().unwrap_or_default();
        for id in v.unwrap_or("").split(',').filter(|s| !s.is_empty()) {
            ids.push(id.parse().map_err(|_| format!("invalid socket inode {id:?}"))?);
        }
        o.ext_unix_sk = Some(ids);
        Ok(())
    }), "allow unix sockets whose peer is outside the tree (only these inodes if given)").many(),
    opt("help", Some('h'), NoArg, ALL, Effect::Tuning("prints help"), "print help and exit"),
    flag("tcp-established", None, DUMP_RESTORE, set!(|o, v, on| { o.tcp_established = on; Ok(()) }),
        "checkpoint and restore established TCP connections"),
    opt("close", None, Required("FD"), ALL, set!(|o, v, on| { o.close_fds.push(number(v)?); Ok(()) }),
        "close descriptor FD before doing anything").many(),
    flag("log-pid", None, ALL, Effect::Tuning("criu-rs writes one log"), "one log file per pid"),
    opt("version", Some('V'), NoArg, ALL, Effect::Tuning("prints the version"), "print the version and exit"),
    flag("evasive-devices", None, DUMPS, Effect::Tuning("a permission: criu-rs records device files by path"),
        "use any path to a device file if the original is inaccessible"),
    opt("pidfile", None, Required("FILE"), &[Restore, PageServer, LazyPages], set!(|o, v, on| { o.pidfile = Some(path(v)); Ok(()) }),
        "write the restored root's (or the daemon's) pid to FILE"),
    opt("veth-pair", None, Required("IN=OUT"), RESTORE, Effect::Refused(RESTORE, NO_NETNS), "outer name of a veth device").many(),
    opt("action-script", None, Required("FILE"), DUMP_RESTORE, set!(|o, v, on| { o.action_scripts.push(path(v)); Ok(()) }),
        "run FILE at each stage, with CRTOOLS_SCRIPT_ACTION set (pre-dump, post-dump, pre-restore, ...)").many(),
    flag("link-remap", None, DUMPS, set!(|o, v, on| { o.link_remap = on; Ok(()) }), "allow linking unlinked files back"),
    flag("shell-job", Some('j'), DUMP_RESTORE, set!(|o, v, on| { o.shell_job = on; Ok(()) }),
        "allow a tree attached to a terminal session (restore: inherit criu-rs's session)"),
    flag("file-locks", Some('l'), DUMP_RESTORE, set!(|o, v, on| { o.file_locks = on; Ok(()) }), "dump and restore file locks"),
    flag("page-server", None, &[Dump, PreDump, LazyPages], set!(|o, v, on| { o.page_server = on; Ok(()) }),
        "dump: send pages to a page server at --address/--port; lazy-pages: fetch them from one"),
    opt("address", None, Required("ADDR"), &[Dump, PreDump, Restore, PageServer, LazyPages], set!(|o, v, on| { o.address = Some(v.unwrap_or("").into()); Ok(()) }),
        "page server address (restore --lazy-pages, lazy-pages: the daemon's socket)"),
    opt("port", None, Required("PORT"), NETWORKED, set!(|o, v, on| {
        let p: u16 = number(v)?;
        if p == 0 {
            return Err("port 0".into());
        }
        o.port = Some(p);
        Ok(())
    }), "page server port"),
    opt("prev-images-dir", None, Required("DIR"), DUMPS, set!(|o, v, on| { o.prev_images_dir = Some(path(v)); Ok(()) }),
        "the parent (pre-)dump, relative to the images directory"),
    opt("ms", None, NoArg, ALL, set!(|o, v, on| Err("--ms is deprecated; see check --help".into())), "deprecated"),
    flag("track-mem", None, DUMPS, set!(|o, v, on| { o.track_mem = on; Ok(()) }), "keep tracking written pages for the next dump"),
    // On by default: two plain flags (a negatable one only turns off what is off by default).
    opt("live-copy", None, NoArg, DUMPS, set!(|o, v, on| { o.live_copy = true; Ok(()) }),
        "criu-rs: copy memory while the tree runs (pre-dump, dump -R; the default)"),
    opt("no-live-copy", None, NoArg, DUMPS, set!(|o, v, on| { o.live_copy = false; Ok(()) }),
        "criu-rs: copy memory with the tree frozen, as CRIU does"),
    flag("auto-dedup", None, DUMP_RESTORE, Effect::Refused(DUMP_RESTORE, "criu-rs never rewrites images"),
        "punch pages out of parent images (dump) or of the images as restored (restore)"),
    opt("libdir", Some('L'), Required("DIR"), ALL, Effect::Tuning("criu-rs has no plugins"), "plugins directory"),
    opt("cpu-cap", None, Optional("CAPS"), DUMP_RESTORE, Effect::Set(cpu_cap), "CPU capabilities to check (fpu, ins are criu-rs's)"),
    flag("force-irmap", None, DUMPS, Effect::Tuning("criu-rs dumps no inotify watch"), "resolve inotify watch names"),
    opt("ext-mount-map", Some('M'), Required("KEY:VAL"), DUMP_RESTORE, set!(|o, v, on| {
        let v = v.unwrap_or("");
        if v == "auto" || v.contains(':') { Ok(()) } else { Err(format!("{v:?} is not auto or KEY:VALUE")) }
    }), "external mounts (accepted: criu-rs dumps and restores no mount namespace)").many(),
    opt("exec-cmd", None, NoArg, RESTORE, Effect::Refused(RESTORE, "run the command yourself once the tree is restored"),
        "run a command after the restore"),
    opt("manage-cgroups", None, Optional("MODE"), DUMP_RESTORE, set!(|o, v, on| {
        one_of(Some(v.unwrap_or("soft")), &["none", "props", "soft", "full", "strict", "ignore"])?;
        o.manage_cgroups = Some(v.unwrap_or("soft").to_string());
        Ok(())
    }), "cgroups handling (only ignore: criu-rs does not dump or restore cgroups)"),
    opt("cgroup-root", None, Required("[CTL:]/PATH"), DUMP_RESTORE, Effect::Refused(DUMP_RESTORE, NO_CGROUPS), "cgroup root").many(),
    opt("inherit-fd", None, Required("fd[N]:RESOURCE"), RESTORE, Effect::Set(inherit_fd),
        "use criu-rs's descriptor N for RESOURCE").many(),
    opt("feature", None, Required("NAME"), &[Check], set!(|o, v, on| { o.features.push(v.unwrap_or("").into()); Ok(()) }),
        "check one feature (list: print the names)").many(),
    opt("skip-mnt", None, Required("PATH"), DUMPS, Effect::Tuning(NO_MNTNS), "skip a mount").many(),
    opt("enable-fs", None, Required("FS,..."), DUMPS, Effect::Tuning(NO_MNTNS), "auto-detect these file systems' mounts"),
    opt("enable-external-sharing", None, NoArg, DUMPS, Effect::Tuning(NO_MNTNS), "allow external shared mounts"),
    opt("enable-external-masters", None, NoArg, DUMPS, Effect::Tuning(NO_MNTNS), "allow external master mounts"),
    opt("freeze-cgroup", None, Required("PATH"), DUMPS, Effect::Tuning("criu-rs freezes the tree with ptrace"),
        "freeze with the cgroup freezer"),
    opt("ghost-limit", None, Required("SIZE"), DUMPS, set!(|o, v, on| { o.ghost_limit = Some(size(v)?); Ok(()) }),
        "largest deleted file kept in the images"),
    opt("irmap-scan-path", None, Required("PATH"), DUMPS, Effect::Tuning("criu-rs dumps no inotify watch"), "inotify resolve path").many(),
    opt("lsm-profile", None, Required("TYPE:NAME"), RESTORE, Effect::Refused(RESTORE, "criu-rs sets no LSM profile"),
        "LSM profile to restore with"),
    opt("timeout", None, Required("SECONDS"), ALL, set!(|o, v, on| { o.timeout = number(v)?; Ok(()) }),
        "seconds to freeze the tree (default 10)"),
    opt("external", None, Required("TYPE[ID]:VALUE"), DUMP_RESTORE, set!(|o, v, on| { o.external.push(v.unwrap_or("").into()); Ok(()) }),
        "an external resource").many(),
    opt("empty-ns", None, Required("net"), DUMP_RESTORE, Effect::Refused(DUMP_RESTORE, NO_NETNS), "restore into an empty network namespace"),
    opt("lazy-pages", None, NoArg, &[Dump, Restore, PageServer], set!(|o, v, on| { o.lazy_pages = true; Ok(()) }),
        "dump: keep the memory and serve it; restore: leave it to the lazy-pages daemon"),
    flag("extra", None, &[Check], set!(|o, v, on| { o.check_extra = on; Ok(()) }), "check category 2 features too"),
    flag("experimental", None, &[Check], set!(|o, v, on| { o.check_experimental = on; Ok(()) }), "check category 3 features too"),
    opt("all", None, NoArg, &[Check], set!(|o, v, on| { o.check_extra = true; o.check_experimental = true; Ok(()) }),
        "check every feature"),
    opt("cgroup-props", None, Required("SPEC"), DUMPS, Effect::Tuning(NO_CGROUPS), "cgroup properties"),
    opt("cgroup-props-file", None, Required("FILE"), DUMPS, Effect::Tuning(NO_CGROUPS), "cgroup properties file"),
    opt("cgroup-dump-controller", None, Required("NAME"), DUMPS, Effect::Tuning(NO_CGROUPS), "dump only this controller").many(),
    flag("skip-in-flight", None, DUMPS, set!(|o, v, on| { o.tcp_skip_in_flight = on; Ok(()) }),
        "leave out TCP connections not yet established"),
    flag("deprecated", None, ALL, Effect::Tuning("criu-rs has no deprecated features"), "allow deprecated features"),
    flag("display-stats", None, DUMP_RESTORE, set!(|o, v, on| { o.display_stats = on; Ok(()) }),
        "print the dump or restore statistics at the end"),
    flag("weak-sysctls", None, RESTORE, Effect::Tuning("criu-rs restores no sysctl"), "skip sysctls the kernel lacks"),
    opt("status-fd", None, Required("FD"), &[Dump, Restore, PageServer, LazyPages], set!(|o, v, on| { o.status_fd = Some(number(v)?); Ok(()) }),
        "write a NUL byte to FD when ready (restored, listening; dump --lazy-pages: serving), then close it"),
    flag("tcp-close", None, DUMP_RESTORE, set!(|o, v, on| { o.tcp_close = on; Ok(()) }), "dump and restore TCP connections closed"),
    opt("verbosity", Some('v'), Optional("N"), ALL, Effect::Set(verbosity),
        "log level: 0 nothing, 1 errors, 2 warnings (default), 3 information, 4 everything; -v, -vv... raise it"),
    opt("ps-socket", None, Required("FD"), NETWORKED, Effect::Refused(NETWORKED, "criu-rs connects and listens itself"),
        "use FD as the page server connection"),
    flag("stream", None, DUMP_RESTORE, Effect::Refused(DUMP_RESTORE, "criu-image-streamer is not supported"),
        "stream images through criu-image-streamer"),
    opt("config", None, Required("FILE"), ALL, set!(|o, v, on| Ok(())), "read options from FILE, and not the default files"),
    opt("no-default-config", None, NoArg, ALL, set!(|o, v, on| Ok(())),
        "do not read /etc/criu/default.conf and $HOME/.criu/default.conf"),
    opt("tls-cacert", None, Required("FILE"), NETWORKED, Effect::Tuning("only with --tls"), "TLS CA certificate"),
    opt("tls-cacrl", None, Required("FILE"), NETWORKED, Effect::Tuning("only with --tls"), "TLS revocation list"),
    opt("tls-cert", None, Required("FILE"), NETWORKED, Effect::Tuning("only with --tls"), "TLS certificate"),
    opt("tls-key", None, Required("FILE"), NETWORKED, Effect::Tuning("only with --tls"), "TLS private key"),
    flag("tls", None, NETWORKED, Effect::Refused(NETWORKED, "criu-rs has no TLS"), "secure the page server connection with TLS"),
    opt("tls-no-cn-verify", None, NoArg, NETWORKED, Effect::Tuning("only with --tls"), "do not verify the peer's name"),
    opt("cgroup-yard", None, Required("PATH"), DUMP_RESTORE, Effect::Tuning(NO_CGROUPS), "pre-mounted cgroup yard"),
    opt("pre-dump-mode", None, Required("splice|read"), DUMPS, set!(|o, v, on| one_of(v, &["splice", "read"])),
        "how CRIU copies pre-dump memory (criu-rs has one way)"),
    opt("file-validation", None, Required("filesize|buildid"), RESTORE, set!(|o, v, on| one_of(v, &["filesize", "buildid"])),
        "how files are validated at restore (criu-rs compares size and times)"),
    flag("skip-file-rwx-check", None, RESTORE, Effect::Tuning("criu-rs does not check file modes at restore"),
        "do not check file permissions"),
    opt("lsm-mount-context", None, Required("CONTEXT"), RESTORE, Effect::Tuning(NO_MNTNS), "mount context"),
    opt("network-lock", None, Required("iptables|nftables|skip"), DUMPS, set!(|o, v, on| {
            o.network_lock = v.unwrap_or("").parse()?;
            Ok(())
        }),
        "how TCP connections are locked while the tree is down (iptables rules per connection, an nftables table, or skip)"),
    flag("mntns-compat-mode", None, RESTORE, Effect::Tuning(NO_MNTNS), "old mount restore engine"),
    flag("unprivileged", None, ALL, Effect::Tuning("criu-rs works with the rights it has"), "accept the limits of running as non-root"),
    flag("ghost-fiemap", None, DUMPS, Effect::Tuning("how sparse ghost files are read"), "read sparse ghost files with fiemap"),
    flag("allow-uprobes", None, DUMP_RESTORE, Effect::Tuning("a permission"), "allow a uprobes area"),
    // criu-rs's own options.
    flag("verify", None, RESTORE, set!(|o, v, on| { o.verify = on; Ok(()) }),
        "criu-rs: before the restored tasks run, compare them with the images (memory areas, files, ids, signals, limits...) and fail, killing them, on a difference. For restores run by a tool (zdtm passes --no-default-config): CRIU_CONFIG_FILE naming a file with the line `verify`"),
    opt("lazy-timeout", None, Required("SECONDS"), &[Dump], set!(|o, v, on| { o.lazy_timeout = Some(number(v)?); Ok(()) }),
        "criu-rs: with --lazy-pages, give up when no lazy-pages client connects within SECONDS"),
    opt("lazy-socket", None, Required("PATH"), &[LazyPages], set!(|o, v, on| { o.lazy_socket = Some(path(v)); Ok(()) }),
        "criu-rs: the socket restores hand their tasks over on (default: lazy-pages.socket in the work directory)"),
    opt("fault-chunk", None, Required("KIB"), &[LazyPages], set!(|o, v, on| { o.fault_chunk = number(v)?; Ok(()) }),
        "criu-rs: KiB filled per fault (default 16)"),
    opt("bg-chunk", None, Required("KIB"), &[LazyPages], set!(|o, v, on| { o.bg_chunk = number(v)?; Ok(()) }),
        "criu-rs: KiB per background copy (default 1024)"),
    opt("no-background", None, NoArg, &[LazyPages], set!(|o, v, on| { o.no_background = true; Ok(()) }),
        "criu-rs: serve faults only, copy nothing in the background"),
    opt("no-follow-cpu", None, NoArg, &[LazyPages], set!(|o, v, on| { o.no_follow_cpu = true; Ok(()) }),
        "criu-rs: stay on the daemon's CPUs while serving faults"),
    opt("tasks", None, Required("N"), &[LazyPages], set!(|o, v, on| { o.tasks = Some(number(v)?); Ok(()) }),
        "criu-rs: tasks to wait for (default: from the images)"),
    opt("register-timeout", None, Required("SECONDS"), &[LazyPages], set!(|o, v, on| { o.register_timeout = number(v)?; Ok(()) }),
        "criu-rs: time a task may take to register its lazy ranges (default 30)"),
    opt("connect-timeout", None, Required("SECONDS"), &[LazyPages], set!(|o, v, on| { o.connect_timeout = number(v)?; Ok(()) }),
        "criu-rs: time to wait for the next task (default 60)"),
    opt("mmap-page-image", None, NoArg, RESTORE, set!(|o, v, on| { o.mmap_page_image = true; Ok(()) }),
        "criu-rs: map private memory from the pages images (instant restore), then make it anonymous in the background"),
    opt("finish-mmap", None, Required("PID"), RESTORE, set!(|o, v, on| {
        let pid: i32 = v.unwrap_or("").trim().parse().map_err(|_| format!("invalid pid {:?}", v.unwrap_or("")))?;
        o.finish_mmap = Some(pid);
        Ok(())
    }), "criu-rs: convert what a --mmap-page-image restore of -D's images left mapped in PID and its descendants, then exit"),
];

/// The clap argument for `o` in command `cmd`'s parser (hidden where it
/// does not apply, but accepted, as CRIU accepts any option anywhere).
fn clap_arg(o: &'static Opt, cmd: Cmd) -> clap::Arg {
    use clap::ArgAction;
    let note = match o.effect {
        Effect::Set(_) => String::new(),
        Effect::Tuning(why) => format!(" [accepted, no effect: {why}]"),
        Effect::Refused(_, why) => format!(" [not supported: {why}]"),
    };
    let neg = if o.negatable { " (--no-{} to turn off)" } else { "" }.replace("{}", o.long);
    let mut a = clap::Arg::new(o.long).long(o.long).help(format!("{}{neg}{note}", o.help));
    if let Some(c) = o.short {
        a = a.short(c);
    }
    a = match (o.long, o.arg) {
        ("help", _) => a.action(ArgAction::Help),
        ("version", _) => a.action(ArgAction::Version),
        (_, Arg::None) => a.action(ArgAction::SetTrue),
        (_, Arg::Required(name)) => a.value_name(name).action(if o.repeat { ArgAction::Append } else { ArgAction::Set }),
        (_, Arg::Optional(name)) => a
            .value_name(name)
            .num_args(0..=1)
            .require_equals(true)
            .default_missing_value("")
            .action(if o.repeat { ArgAction::Append } else { ArgAction::Set }),
    };
    a.hide(!o.cmds.is_empty() && !o.cmds.contains(&cmd))
}

/// criu-rs's clap parser: one subcommand per command, each taking every
/// option (what does not apply to a command is hidden from its help).
/// It parses the canonical words of [`super::normalize::canonical`].
pub fn clap_command() -> clap::Command {
    let mut root = clap::Command::new("criu-rs")
        .about("Checkpoint/restore in userspace for Linux, with CRIU's command line and images")
        .version(env!("CARGO_PKG_VERSION"))
        .after_help(
            "Options may come before or after the command; boolean options take a --no- form.\n\
             Configuration files: /etc/criu/default.conf, $HOME/.criu/default.conf (not with --no-default-config\n\
             or --config), $CRIU_CONFIG_FILE, --config FILE: one option per line, without the dashes.",
        )
        .subcommand_required(true)
        .args_override_self(true);
    for &cmd in Cmd::ALL {
        let args = OPTIONS.iter().map(|o| clap_arg(o, cmd));
        let sub = clap::Command::new(cmd.name())
            .about(cmd.about())
            .version(env!("CARGO_PKG_VERSION"))
            .disable_help_flag(true)
            .disable_version_flag(true)
            .args_override_self(true)
            .args(args);
        root = root.subcommand(sub);
    }
    root
}

/// Applies what clap parsed to `opts`, row by row.
pub fn apply(m: &clap::ArgMatches, opts: &mut Opts) -> Result<(), String> {
    for o in OPTIONS.iter().filter(|o| o.long != "help" && o.long != "version") {
        let values: Vec<Option<&str>> = match o.arg {
            Arg::None => {
                if !m.get_flag(o.long) {
                    continue;
                }
                vec![None]
            }
            _ => match m.get_many::<String>(o.long) {
                None => continue,
                Some(v) => v.map(|s| Some(s.as_str()).filter(|s| !s.is_empty() || matches!(o.arg, Arg::Required(_)))).collect(),
            },
        };
        for v in values {
            let written = match v {
                Some(v) => format!("--{}={v}", o.long),
                None => format!("--{}", o.long),
            };
            match o.effect {
                Effect::Set(set) => set(opts, v, true).map_err(|e| format!("{written}: {e}"))?,
                Effect::Tuning(_) => {}
                Effect::Refused(on, why) => {
                    opts.refused.insert(o.long, (written, on, why));
                }
            }
        }
    }
    Ok(())
}
