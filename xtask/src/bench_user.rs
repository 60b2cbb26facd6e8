//! `cargo xtask bench`, user-flow rows (issue 15): what a user runs, timed.
//!
//! Each run starts a fresh `tests/programs/bigmem.c` (in its own session,
//! fds 0-2 on /dev/null; a tree of tasks for the tree rows), dumps it
//! (`dump -t PID -D DIR`, which kills it), waits until every pid of the
//! tree is gone, restores it once (`restore -d -D DIR`), then signals the
//! restored root: every task checks its own memory and the root writes the
//! verdict, which must be "OK". Nothing is warmed up: each run is a new
//! process and new images, as a user's dump and restore are.
//!
//! With `CRIU_BIN` set (an upstream CRIU, e.g. /tmp/upstream-criu/criu/criu),
//! every run of criu-rs is paired with one of CRIU on the same program
//! (which goes first alternates), and each row gives both medians and the
//! ratio criu-rs / CRIU (below 1: criu-rs is faster). The
//! `--mmap-page-image` rows (`1g-mmap`, `1g-mmap-lazy`, not in the default
//! bench) pair criu-rs's mapped restore with CRIU's eager restore and with
//! CRIU's lazy restore (`criu lazy-pages -D DIR` started first, then
//! `criu restore -d --lazy-pages`).
//!
//! # Adding a row
//! Add a [`Case`] to [`CASES`]: a name (selects it with
//! `--only user:NAME`), the program's shape (MiB per task, tree) and extra
//! arguments given to criu-rs only (`dump_args`, `restore_args`; e.g. a
//! restore option to compare with the default way, CRIU runs unchanged).
//! Rows marked `default: false` run only when asked for (`--only user`
//! runs every case, `--only user:NAME` one).

use anyhow::{bail, Context, Result};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The tree a case's program makes.
#[derive(Debug, Clone, Copy)]
pub enum Tree {
    /// One process.
    Single,
    /// The root and this many children.
    Wide(u32),
    /// A chain of this many descendants below the root.
    Deep(u32),
}

/// One user-flow measurement: a dump row and a restore row.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// Row label and `--only user:NAME` selector.
    pub name: &'static str,
    /// MiB of patterned anonymous memory each task holds.
    pub mib: u64,
    pub tree: Tree,
    /// Extra arguments for criu-rs's dump / restore (not CRIU's).
    pub dump_args: &'static [&'static str],
    pub restore_args: &'static [&'static str],
    /// Part of the default `cargo xtask bench`.
    pub default: bool,
    /// Runs per tool in the default bench (`--runs` caps it).
    pub runs: u32,
    /// How CRIU restores in this row's pairs.
    pub criu: CriuRestore,
}

/// How the CRIU run of a pair restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CriuRestore {
    /// `criu restore -d`: every page read before the tasks run.
    Eager,
    /// `criu lazy-pages -D DIR` started first, then `criu restore -d
    /// --lazy-pages`: pages served on first touch (a plain CRIU dump marks
    /// anonymous memory lazy).
    Lazy,
}

/// A plain single-process case.
const fn mem(name: &'static str, mib: u64, default: bool, runs: u32) -> Case {
    Case { name, mib, tree: Tree::Single, dump_args: &[], restore_args: &[], default, runs, criu: CriuRestore::Eager }
}

/// A single process restored by criu-rs with `--mmap-page-image` (issue
/// 10), beside CRIU restoring it eagerly or lazily.
const fn mapped(name: &'static str, mib: u64, criu: CriuRestore) -> Case {
    Case { name, mib, tree: Tree::Single, dump_args: &[], restore_args: &["--mmap-page-image"], default: false, runs: 3, criu }
}

/// A tree of small tasks.
const fn tree(name: &'static str, tree: Tree, default: bool) -> Case {
    Case { name, mib: 1, tree, dump_args: &[], restore_args: &[], default, runs: 3, criu: CriuRestore::Eager }
}

/// Every user-flow case, in table order.
pub const CASES: &[Case] = &[
    mem("16m", 16, true, 5),
    mem("1g", 1024, true, 5),
    mem("8g", 8192, false, 3),
    tree("wide10", Tree::Wide(10), false),
    tree("wide100", Tree::Wide(100), true),
    tree("wide1000", Tree::Wide(1000), false),
    tree("deep100", Tree::Deep(100), true),
    mapped("1g-mmap", 1024, CriuRestore::Eager),
    mapped("1g-mmap-lazy", 1024, CriuRestore::Lazy),
];

impl Case {
    fn tasks(&self) -> u32 {
        match self.tree {
            Tree::Single => 1,
            Tree::Wide(n) | Tree::Deep(n) => 1 + n,
        }
    }

    fn label(&self) -> String {
        let how = match (self.restore_args, self.criu) {
            (&[], CriuRestore::Eager) => "",
            (_, CriuRestore::Eager) => ", criu-rs --mmap-page-image vs CRIU eager",
            (_, CriuRestore::Lazy) => ", criu-rs --mmap-page-image vs CRIU --lazy-pages",
        };
        let what = match self.tree {
            Tree::Single if self.mib >= 1024 => format!("{} GiB", self.mib / 1024),
            Tree::Single => format!("{} MiB", self.mib),
            Tree::Wide(n) => format!("wide tree, root + {n} children, {} MiB each", self.mib),
            Tree::Deep(n) => format!("deep tree, chain of {} tasks, {} MiB each", n + 1, self.mib),
        };
        format!("{what}{how}")
    }

    fn program_args(&self) -> Vec<String> {
        match self.tree {
            Tree::Single => vec![],
            Tree::Wide(n) => vec!["wide".into(), n.to_string()],
            Tree::Deep(n) => vec!["deep".into(), n.to_string()],
        }
    }
}

/// A dump-and-restore tool: criu-rs or an upstream CRIU.
struct Tool {
    name: &'static str,
    exe: PathBuf,
    /// Extra arguments (criu-rs only).
    dump_args: Vec<String>,
    restore_args: Vec<String>,
    /// Restores through a lazy-pages daemon started first (CRIU only).
    lazy: bool,
}

/// One run's times, in seconds.
#[derive(Debug, Clone, Copy)]
struct Times {
    /// The dump command.
    dump: f64,
    /// From the dump's start until every pid of the tree is gone.
    gone: f64,
    /// The restore command.
    restore: f64,
}

/// Pids of `pid` and all its descendants (`/proc/PID/task/TID/children`).
fn tree_pids(pid: i32) -> Vec<i32> {
    let mut all = vec![pid];
    let mut i = 0;
    while let Some(&p) = all.get(i) {
        let kids = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        all.extend(kids.split_whitespace().filter_map(|k| k.parse::<i32>().ok()));
        i += 1;
    }
    all
}

/// Waits until none of `pids` is in `/proc` any more.
fn wait_all_gone(pids: &[i32], limit: Duration) -> Result<()> {
    let start = Instant::now();
    for &p in pids {
        while Path::new(&format!("/proc/{p}")).exists() {
            anyhow::ensure!(start.elapsed() < limit, "pid {p} is still in use after {limit:?}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(())
}

/// The last lines of a log in the images dir, for error messages.
fn log_tail(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// One run of `case` with `tool` in `work`.
fn run_once(tool: &Tool, bigmem: &Path, case: &Case, work: &Path) -> Result<Times> {
    let images = work.join(format!("images-{}", tool.name));
    let result = work.join(format!("result-{}", tool.name));
    let _ = std::fs::remove_dir_all(&images);
    let _ = std::fs::remove_file(&result);
    std::fs::create_dir_all(&images)?;
    let mut child = Command::new(bigmem)
        .arg(case.mib.to_string())
        .arg(&result)
        .args(case.program_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id() as i32;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let pids = tree_pids(pid);
    if !line.starts_with("READY") || pids.len() != case.tasks() as usize {
        for &p in &pids {
            // SAFETY: kill(2) of the tree this run started.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        let _ = child.wait();
        bail!("bigmem said {line:?}, {} of {} tasks found", pids.len(), case.tasks());
    }
    let t = Instant::now();
    let out = Command::new(&tool.exe)
        .args(["dump", "-t", &pid.to_string(), "-D"])
        .arg(&images)
        .args(["-o", "dump.log"])
        .args(&tool.dump_args)
        .output()?;
    let dump = t.elapsed().as_secs_f64();
    if !out.status.success() {
        for &p in &pids {
            // SAFETY: kill(2) of the tree this run started.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        let _ = child.wait();
        bail!("{} dump failed: {}{}", tool.name, String::from_utf8_lossy(&out.stderr), log_tail(&images, "dump.log"));
    }
    let _ = child.wait();
    wait_all_gone(&pids, Duration::from_secs(60))?;
    let gone = t.elapsed().as_secs_f64();
    let daemon = if tool.lazy { Some(start_lazy_daemon(tool, &images)?) } else { None };
    let t = Instant::now();
    let out = Command::new(&tool.exe)
        .args(["restore", "-d", "-D"])
        .arg(&images)
        .args(["-o", "restore.log"])
        .args(&tool.restore_args)
        .args(if tool.lazy { &["--lazy-pages"][..] } else { &[] })
        .output()?;
    let restore = t.elapsed().as_secs_f64();
    let verdict = if out.status.success() {
        // SAFETY: kill(2) of the root this run restored.
        unsafe { libc::kill(pid, libc::SIGUSR1) };
        let start = Instant::now();
        while !result.exists() && start.elapsed() < Duration::from_secs(120) && Path::new(&format!("/proc/{pid}")).exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::fs::read_to_string(&result).unwrap_or_else(|_| "no verdict written".into())
    } else {
        String::new()
    };
    for &p in &pids {
        // SAFETY: kill(2) of the tree this run restored (if still there).
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    if let Some(mut d) = daemon {
        // The daemon ends once the tree is gone; a hang guard all the same.
        let start = Instant::now();
        while d.try_wait()?.is_none() && start.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = d.kill();
        let _ = d.wait();
    }
    if !out.status.success() {
        bail!("{} restore failed: {}{}", tool.name, String::from_utf8_lossy(&out.stderr), log_tail(&images, "restore.log"));
    }
    anyhow::ensure!(
        verdict.starts_with(&format!("OK tasks={}", case.tasks())),
        "the tree restored by {} found: {verdict}",
        tool.name
    );
    wait_all_gone(&pids, Duration::from_secs(60))?;
    let _ = std::fs::remove_dir_all(&images);
    let _ = std::fs::remove_file(&result);
    Ok(Times { dump, gone, restore })
}

/// `TOOL lazy-pages -D IMAGES -o lazy-pages.log`, once its socket is
/// there (the restore connects to it).
fn start_lazy_daemon(tool: &Tool, images: &Path) -> Result<std::process::Child> {
    let mut d = Command::new(&tool.exe)
        .args(["lazy-pages", "-D"])
        .arg(images)
        .args(["-o", "lazy-pages.log"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let socket = images.join("lazy-pages.socket");
    let start = Instant::now();
    while !socket.exists() {
        if d.try_wait()?.is_some() || start.elapsed() > Duration::from_secs(30) {
            let _ = d.kill();
            let _ = d.wait();
            bail!("{} lazy-pages did not start: {}", tool.name, log_tail(images, "lazy-pages.log"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(d)
}

/// Seconds as text.
fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// Which cases `only` asks for: `None` (the default bench), `user` (all),
/// `user:NAME[,NAME...]`.
pub fn selected(only: Option<&str>) -> Result<Vec<Case>> {
    match only {
        None => Ok(CASES.iter().filter(|c| c.default).copied().collect()),
        Some("user") => Ok(CASES.to_vec()),
        Some(o) => {
            let names = o.strip_prefix("user:").with_context(|| format!("not a user-flow selector: {o}"))?;
            names
                .split(',')
                .map(|n| CASES.iter().find(|c| c.name == n).copied().with_context(|| format!("no user-flow case {n:?}; cases: {}", names_list())))
                .collect()
        }
    }
}

fn names_list() -> String {
    CASES.iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
}

/// The 1-minute load average.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().next().map(str::to_owned)).unwrap_or_default()
}

/// The rows of `cases`, at most `runs` runs per tool each.
pub fn rows(root: &Path, cases: &[Case], runs: u32) -> Result<Vec<(String, String)>> {
    let (criu_rs, bigmem) = crate::bench_dump::build(root)?;
    let criu = std::env::var_os("CRIU_BIN").map(PathBuf::from);
    let work = root.join("target/bench-user");
    std::fs::create_dir_all(&work)?;
    let mut rows = Vec::new();
    for case in cases {
        let load_before = load();
        let ours = Tool {
            name: "criu-rs",
            exe: criu_rs.clone(),
            dump_args: case.dump_args.iter().map(|s| s.to_string()).collect(),
            restore_args: case.restore_args.iter().map(|s| s.to_string()).collect(),
            lazy: false,
        };
        let lazy = case.criu == CriuRestore::Lazy;
        let theirs = criu.as_ref().map(|exe| Tool { name: "criu", exe: exe.clone(), dump_args: vec![], restore_args: vec![], lazy });
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut criu_error = None;
        let n = case.runs.min(runs).max(1);
        for i in 0..n {
            let mut order = vec![(&ours, true)];
            if let (Some(t), None) = (&theirs, &criu_error) {
                order.insert(if i % 2 == 0 { 1 } else { 0 }, (t, false));
            }
            for (tool, is_ours) in order {
                match run_once(tool, &bigmem, case, &work) {
                    Ok(t) if is_ours => a.push(t),
                    Ok(t) => b.push(t),
                    Err(e) if is_ours => return Err(e.context(format!("user flow {}", case.name))),
                    Err(e) => criu_error = Some(format!("{e:#}")),
                }
            }
        }
        let med = |v: &[Times], f: fn(&Times) -> f64| crate::bench_restore::median(v.iter().map(f).collect());
        let tasks = case.tasks() as f64;
        let cell = |f: fn(&Times) -> f64, cmd: String| {
            let o = med(&a, f);
            let per_task = if tasks > 1.0 { format!(" ({} per task)", secs(o / tasks)) } else { String::new() };
            let vs = match (&criu_error, b.is_empty()) {
                (Some(e), _) => format!("CRIU failed: {}", e.lines().next().unwrap_or("")),
                (None, true) => "CRIU not run (set CRIU_BIN)".into(),
                (None, false) => {
                    let t = med(&b, f);
                    let how = if lazy { " (lazy-pages)" } else { "" };
                    format!("CRIU{how} {}, ratio {:.2}", secs(t), o / t)
                }
            };
            format!("{}{per_task}; {vs}; median of {}; load {load_before}; `{cmd}`", secs(o), a.len())
        };
        let extra = |v: &[&str]| v.iter().map(|s| format!(" {s}")).collect::<String>();
        rows.push((
            format!("user dump, {}", case.label()),
            cell(|t| t.dump, format!("dump -t PID -D DIR -o dump.log{}", extra(case.dump_args))),
        ));
        rows.push((format!("  dump until every pid is gone"), cell(|t| t.gone, "dump, then wait for /proc/PID of every task to go".into())));
        rows.push((
            format!("user restore, {}", case.label()),
            cell(|t| t.restore, format!("restore -d -D DIR -o restore.log{}", extra(case.restore_args))),
        ));
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(rows)
}
