//! `cargo xtask mutants [SCOPE...] [--list]`: mutation testing with
//! cargo-mutants over the code whose tests must catch what they claim to
//! (issue 14). Each scope names its files (optionally narrowed to some
//! functions) and the tests that should kill its mutants: the unit tests
//! beside the code, or the end-to-end test that checks the restored state
//! from inside. Mutants run in cargo-mutants' scratch copy of the tree
//! (never `--in-place`), with builds in `target/mutants-target` and
//! reports in `target/mutants/SCOPE/`.
//!
//! Every mutant that survives must be listed, with a one-line reason, in
//! `mutants-survivors.txt` at the repository root (`FILE: MUTATION # why`,
//! line and column left out so that edits elsewhere keep the list valid).
//! A survivor not in that list fails the command: write a test that kills
//! it, or say in the list why no test should.
//!
//! cargo-mutants is installed on demand (`cargo install cargo-mutants
//! --locked`): building it takes minutes, too long for CI, which does not
//! run mutants.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

/// One group of code and the tests that should kill its mutants.
struct Scope {
    name: &'static str,
    /// `.` (the workspace) or `restorer-pie` (the blob's own workspace).
    dir: &'static str,
    /// Files relative to `dir`.
    files: &'static [&'static str],
    /// Only functions matching this regex (cargo-mutants `--re`), if any.
    re: Option<&'static str>,
    /// The package whose tests run (`--test-package`), if not all of `dir`.
    package: Option<&'static str>,
    /// `cargo test` arguments, then `--` and the test binary's.
    test_args: &'static [&'static str],
    /// Seconds a mutant's test run may take (`--timeout`): a hang guard
    /// (a mutant may loop forever), a few times what the tests need.
    timeout: u32,
}

const SCOPES: &[Scope] = &[
    Scope {
        name: "rlimits",
        dir: ".",
        files: &["criu-core/src/proc/limits.rs"],
        re: None,
        package: Some("criu-core"),
        test_args: &["--lib", "--", "proc::limits"],
        timeout: 60,
    },
    Scope {
        name: "creds",
        dir: ".",
        files: &["criu-core/src/proc/status.rs"],
        re: None,
        package: Some("criu-core"),
        test_args: &["--lib", "--", "proc::status"],
        timeout: 60,
    },
    Scope {
        name: "args",
        dir: ".",
        files: &["criu-core/src/restore/args.rs"],
        re: None,
        package: Some("criu-core"),
        test_args: &["--lib", "--", "restore::args"],
        timeout: 60,
    },
    Scope {
        name: "task-state-e2e",
        dir: ".",
        files: &["criu-core/src/restore/args.rs"],
        re: Some("creds_arg|build"),
        package: Some("criu-cli"),
        test_args: &["--test", "restore_task_state"],
        timeout: 600,
    },
    Scope {
        name: "fds",
        dir: ".",
        // The fd table's restore (restore/fds.rs only re-exports it); it
        // has no unit tests: the programs of files_e2e check it from inside.
        files: &["criu-core/src/files/fdtable.rs"],
        re: None,
        package: Some("criu-cli"),
        test_args: &["--test", "files_e2e"],
        timeout: 600,
    },
    Scope {
        name: "fill",
        dir: ".",
        files: &["criu-core/src/restore/fill.rs"],
        re: None,
        package: Some("criu-core"),
        test_args: &["--lib", "--", "restore::fill"],
        timeout: 60,
    },
    Scope {
        name: "blob-layout",
        dir: "restorer-pie",
        files: &["src/restore/layout.rs"],
        re: None,
        package: None,
        test_args: &["--lib"],
        timeout: 60,
    },
    Scope {
        name: "blob-plan",
        dir: "restorer-pie",
        files: &["src/restore/plan.rs"],
        re: None,
        package: None,
        test_args: &["--lib"],
        timeout: 60,
    },
];

const USAGE: &str = "usage: cargo xtask mutants [--list] [SCOPE...] (scopes: rlimits creds args task-state-e2e fds fill blob-layout blob-plan; default all)";

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let list = args.iter().any(|a| a == "--list");
    let names: Vec<&str> = args.iter().map(String::as_str).filter(|a| *a != "--list").collect();
    if names.iter().any(|n| n.starts_with('-')) {
        bail!("{USAGE}");
    }
    for n in &names {
        if !SCOPES.iter().any(|s| s.name == *n) {
            bail!("unknown scope {n}\n{USAGE}");
        }
    }
    ensure_cargo_mutants()?;
    let listed = read_survivor_list(&root.join("mutants-survivors.txt"))?;
    let mut unexplained = Vec::new();
    let (mut total_caught, mut total_missed) = (0usize, 0usize);
    for s in SCOPES.iter().filter(|s| names.is_empty() || names.contains(&s.name)) {
        let out_dir = root.join("target/mutants").join(s.name);
        // cargo-mutants creates only the last component.
        std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
        let mut cmd = Command::new("cargo");
        cmd.arg("mutants").current_dir(root.join(s.dir));
        for f in s.files {
            cmd.args(["--file", f]);
        }
        if let Some(re) = s.re {
            cmd.args(["--re", re]);
        }
        if list {
            cmd.arg("--list");
            let st = cmd.status()?;
            if !st.success() {
                bail!("cargo mutants --list for {} failed", s.name);
            }
            continue;
        }
        if let Some(p) = s.package {
            cmd.args(["--test-package", p]);
        }
        cmd.args(["--baseline", "skip", "--no-shuffle", "--timeout", &s.timeout.to_string(), "--output"])
            .arg(&out_dir)
            .env("CARGO_TARGET_DIR", root.join("target/mutants-target").join(s.dir))
            .arg("--")
            .args(s.test_args);
        println!("== mutants: {} ({:?})", s.name, s.files);
        let t = std::time::Instant::now();
        // Exit status 2 means "some mutants survived": judged below.
        let st = cmd.status().context("running cargo mutants")?;
        if !matches!(st.code(), Some(0 | 2 | 3)) {
            bail!("cargo mutants for {} failed: {st}", s.name);
        }
        let read = |f: &str| std::fs::read_to_string(out_dir.join("mutants.out").join(f)).unwrap_or_default();
        let caught = read("caught.txt").lines().count();
        let missed: Vec<String> = read("missed.txt").lines().map(str::to_owned).collect();
        let timeout = read("timeout.txt").lines().count();
        let unviable = read("unviable.txt").lines().count();
        println!(
            "== {}: {caught} caught, {} missed, {timeout} timed out, {unviable} unviable, in {:.0?}",
            s.name,
            missed.len(),
            t.elapsed()
        );
        total_caught += caught + timeout;
        total_missed += missed.len();
        for m in missed {
            let key = survivor_key(s.dir, &m);
            if !listed.contains(&key) {
                unexplained.push(key);
            }
        }
    }
    if list {
        return Ok(());
    }
    let all = total_caught + total_missed;
    if all > 0 {
        println!("kill rate: {total_caught}/{all} ({:.1}%)", 100.0 * total_caught as f64 / all as f64);
    }
    if !unexplained.is_empty() {
        for u in &unexplained {
            println!("unexplained survivor: {u}");
        }
        bail!("{} surviving mutant(s) neither killed by a test nor listed with a reason in mutants-survivors.txt", unexplained.len());
    }
    Ok(())
}

/// Installs cargo-mutants unless `cargo mutants --version` works.
fn ensure_cargo_mutants() -> Result<()> {
    let have = Command::new("cargo").args(["mutants", "--version"]).output().is_ok_and(|o| o.status.success());
    if !have {
        println!("installing cargo-mutants (takes minutes)...");
        let st = Command::new("cargo").args(["install", "cargo-mutants", "--locked"]).status()?;
        if !st.success() {
            bail!("cargo install cargo-mutants failed");
        }
    }
    Ok(())
}

/// `src/x.rs:12:5: replace f -> u32 with 0` (as cargo-mutants prints it,
/// relative to `dir`) as `DIR/src/x.rs: replace f -> u32 with 0`.
fn survivor_key(dir: &str, line: &str) -> String {
    let mut parts = line.splitn(4, ':');
    let file = parts.next().unwrap_or("");
    let (_line, _col) = (parts.next(), parts.next());
    let what = parts.next().unwrap_or("").trim();
    let file = if dir == "." { file.to_owned() } else { format!("{dir}/{file}") };
    format!("{file}: {what}")
}

/// The listed survivors (`FILE: MUTATION # reason`): the keys, each with a reason.
fn read_survivor_list(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut keys = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let l = l.trim();
        if l.is_empty() || l.starts_with("//") {
            continue;
        }
        let Some((key, reason)) = l.rsplit_once(" # ") else {
            bail!("{}:{}: no ` # reason` in {l:?}", path.display(), i + 1);
        };
        if reason.trim().is_empty() {
            bail!("{}:{}: empty reason", path.display(), i + 1);
        }
        keys.push(key.trim().to_owned());
    }
    Ok(keys)
}
