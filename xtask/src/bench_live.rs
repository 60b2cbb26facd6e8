//! `cargo xtask bench`, stall rows (issue 15): how long a snapshot keeps a
//! busy process from running, measured from inside it.
//!
//! `tests/programs/stall.c` holds 1 GiB and rewrites 5% of it every 100 ms
//! in 1 ms slices; its writer thread records the longest gap between two
//! slices (about 1 ms when nothing stops it). For each way of taking a
//! snapshot the gap is reset (SIGUSR1), the command run, and the longest
//! gap read back (SIGUSR2) once it is done: `dump -R`, `pre-dump`, then the
//! incremental `dump -R --prev-images-dir` against that pre-dump (all with
//! the live copy, criu-rs's default), `dump -R --no-live-copy` (the memory
//! copied frozen, as before), and, with `CRIU_BIN` set, CRIU's `dump -R`.
//! Each row: the median over the runs of the longest gap, the median time
//! the command took, criu-rs's own frozen time and its live-copy counters
//! (faults served, time writes waited for room) from the last run's log.

use anyhow::{bail, Context, Result};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use crate::bench::Kill;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// MiB the program holds.
const MIB: u64 = 1024;

/// The program, started and filled.
struct Stall {
    child: Kill,
    result: PathBuf,
}

impl Stall {
    fn pid(&self) -> i32 {
        self.child.0.id() as i32
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) of the program this bench started.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// The longest gap (µs) since the last reset.
    fn max_gap_us(&self) -> Result<u64> {
        let _ = std::fs::remove_file(&self.result);
        self.signal(libc::SIGUSR2);
        let t = Instant::now();
        loop {
            if let Ok(s) = std::fs::read_to_string(&self.result) {
                let v = s.split_whitespace().find_map(|w| w.strip_prefix("max_gap_us=")).context("no max_gap_us")?;
                return Ok(v.parse()?);
            }
            if t.elapsed() > Duration::from_secs(30) {
                bail!("stall.c wrote no result");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// A snapshot way: row label, tool, arguments before `-D DIR`, and
/// whether it needs the previous step's images (`--prev-images-dir`).
struct Way {
    label: &'static str,
    criu: bool,
    args: &'static [&'static str],
    parent: Option<&'static str>,
    dir: &'static str,
}

const WAYS: &[Way] = &[
    Way { label: "live dump -R", criu: false, args: &["dump", "-R"], parent: None, dir: "dump" },
    Way { label: "live pre-dump", criu: false, args: &["pre-dump"], parent: None, dir: "pre" },
    Way { label: "live incremental dump -R after it", criu: false, args: &["dump", "-R"], parent: Some("../pre"), dir: "inc" },
    Way { label: "dump -R --no-live-copy (frozen copy)", criu: false, args: &["dump", "-R", "--no-live-copy"], parent: None, dir: "frozen" },
    Way { label: "CRIU dump -R", criu: true, args: &["dump", "-R"], parent: None, dir: "criu" },
];

/// One snapshot: (longest gap ms, command seconds).
fn once(exe: &Path, way: &Way, p: &Stall, work: &Path) -> Result<(f64, f64)> {
    let dir = work.join(way.dir);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    // Settle, then measure from a fresh maximum.
    std::thread::sleep(Duration::from_millis(300));
    p.signal(libc::SIGUSR1);
    std::thread::sleep(Duration::from_millis(100));
    let mut cmd = Command::new(exe);
    cmd.args(way.args).args(["-t", &p.pid().to_string(), "-D"]).arg(&dir).args(["-o", "dump.log"]);
    if !way.criu {
        cmd.arg("-v4");
    }
    if let Some(parent) = way.parent {
        cmd.args(["--prev-images-dir", parent]);
    }
    let t = Instant::now();
    let out = cmd.output()?;
    let took = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{} failed: {}", way.label, String::from_utf8_lossy(&out.stderr));
    }
    std::thread::sleep(Duration::from_millis(100));
    let gap = p.max_gap_us()? as f64 / 1e3;
    Ok((gap, took))
}

/// criu-rs's frozen time and live-copy counters from a dump's log.
fn log_facts(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("dump.log")).unwrap_or_default();
    let field = |line: &str, key: &str| line.split_whitespace().find_map(|w| w.strip_prefix(key)).map(str::to_owned);
    let mut facts = Vec::new();
    if let Some(l) = log.lines().find(|l| l.contains("dump finished")) {
        if let Some(v) = field(l, "frozen_ms=") {
            facts.push(format!("frozen {v} ms"));
        }
    }
    if let Some(l) = log.lines().find(|l| l.contains("live copy done")) {
        for k in ["faults=", "throttled_ms=", "early_peak_kib="] {
            if let Some(v) = field(l, k) {
                facts.push(format!("{}{v}", k.trim_end_matches('=').replace('_', " ") + " "));
            }
        }
    }
    facts.join(", ")
}

pub fn rows(root: &Path, runs: u32) -> Result<Vec<(String, String)>> {
    let (criu_rs, _) = crate::bench_dump::build(root)?;
    let criu = std::env::var_os("CRIU_BIN").map(PathBuf::from);
    let work = root.join("target/bench-live");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let exe = work.join("stall");
    let st = Command::new("cc").args(["-O2", "-pthread", "-o"]).arg(&exe).arg(root.join("tests/programs/stall.c")).status()?;
    if !st.success() {
        bail!("compiling stall.c failed");
    }
    let result = work.join("result");
    let mut child = Command::new(&exe).arg(MIB.to_string()).arg(&result).stdin(Stdio::null()).stdout(Stdio::piped()).spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let p = Stall { child: Kill(child), result };
    if !line.starts_with("READY") {
        bail!("stall.c said {line:?}");
    }
    // Before any snapshot: the gap it sees running freely.
    std::thread::sleep(Duration::from_millis(300));
    p.signal(libc::SIGUSR1);
    std::thread::sleep(Duration::from_millis(500));
    let idle = p.max_gap_us()? as f64 / 1e3;
    let load = std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().next().map(str::to_owned)).unwrap_or_default();
    let mut results: Vec<(Vec<f64>, Vec<f64>, Option<String>)> = WAYS.iter().map(|_| (Vec::new(), Vec::new(), None)).collect();
    for _ in 0..runs.max(1) {
        for (i, way) in WAYS.iter().enumerate() {
            let tool = match (way.criu, &criu) {
                (false, _) => &criu_rs,
                (true, Some(c)) => c,
                (true, None) => continue,
            };
            match once(tool, way, &p, &work) {
                Ok((gap, took)) => {
                    results[i].0.push(gap);
                    results[i].1.push(took);
                }
                Err(e) if way.criu => results[i].2 = Some(format!("{e:#}")),
                Err(e) => return Err(e),
            }
        }
    }
    let mut rows = vec![(format!("stall, {MIB} MiB writing 5%/100 ms, no snapshot"), format!("longest gap {idle:.1} ms over 0.5 s; load {load}"))];
    for (way, (gaps, took, err)) in WAYS.iter().zip(results) {
        let label = format!("stall, {MIB} MiB writing 5%/100 ms, {}", way.label);
        let cmd = format!(
            "{} {} -t PID -D DIR{}",
            if way.criu { "criu" } else { "criu-rs" },
            way.args.join(" "),
            way.parent.map(|p| format!(" --prev-images-dir {p}")).unwrap_or_default()
        );
        let value = match (err, gaps.is_empty()) {
            (Some(e), _) => format!("failed: {}", e.lines().next().unwrap_or("")),
            (None, true) => "not run (set CRIU_BIN)".into(),
            (None, false) => {
                let n = gaps.len();
                let facts = if way.criu { String::new() } else { format!("; {}", log_facts(&work.join(way.dir))) };
                format!(
                    "longest gap {:.1} ms (median of {n}, max {:.1}); command {:.2} s{facts}; load {load}; `{cmd}`",
                    crate::bench_restore::median(gaps.clone()),
                    gaps.iter().copied().fold(0.0, f64::max),
                    crate::bench_restore::median(took),
                )
            }
        };
        rows.push((label, value));
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(rows)
}
