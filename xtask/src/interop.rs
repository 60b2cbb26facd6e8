//! `cargo xtask interop [--bin CRIU_RS] [--tests T,..] [--modes M,..]`:
//! CRIU 4.2 and criu-rs restoring each other's images, as a matrix.
//!
//! CRIU's own test driver (zdtm) runs self-checking test programs (a plain
//! loop, threads and forks, a process tree, pipes, shared files, a deleted
//! file, shared anonymous memory, unix sockets, pending signals, time
//! namespaces); it is handed a `criu` that dumps with one tool and does
//! everything else (restore, page-server, lazy-pages, check) with the
//! other. Four pairs: CRIU → CRIU (the baseline), criu-rs → criu-rs,
//! CRIU → criu-rs and criu-rs → CRIU; in three modes: images on disk
//! (`plain`), pages through the restoring side's page server
//! (`page-server`: the two speak CRIU's protocol), and post-copy from the
//! dumping side (`lazy`: zdtm's `--remote-lazy-pages`). Each cell is zdtm's
//! verdict; the logs stay in `target/interop/`.
//!
//! CRIU is not part of the repository: where `/tmp/upstream-criu` (or
//! `CRIU_BIN` and `ZDTM_DIR`) is not built, the matrix is skipped and the
//! reason written to `target/interop/matrix.txt`.

use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::flag_value;

/// The programs: (what, zdtm test).
const TESTS: &[(&str, &str)] = &[
    ("plain loop", "zdtm/static/env00"),
    ("threads + forks", "zdtm/static/pthread00"),
    ("process tree", "zdtm/transition/fork"),
    ("pipes", "zdtm/static/pipe00"),
    ("shared files", "zdtm/static/file_shared"),
    ("ghost file", "zdtm/static/unlink_fstat00"),
    ("shared anon", "zdtm/static/maps01"),
    ("unix sockets", "zdtm/static/sockets00"),
    ("signals pending", "zdtm/static/sigpending"),
    ("timens", "zdtm/static/timens_for_kids"),
];

/// Modes: (name, zdtm options).
const MODES: &[(&str, &[&str])] = &[("plain", &[]), ("page-server", &["--page-server"]), ("lazy", &["--remote-lazy-pages"])];

/// Who dumps and who restores.
const PAIRS: &[(&str, &str)] = &[("criu", "criu"), ("criu-rs", "criu-rs"), ("criu", "criu-rs"), ("criu-rs", "criu")];

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let out_dir = root.join("target/interop");
    std::fs::create_dir_all(&out_dir)?;
    let matrix_file = out_dir.join("matrix.txt");
    let criu = std::env::var_os("CRIU_BIN").map_or_else(|| PathBuf::from("/tmp/upstream-criu/criu/criu"), PathBuf::from);
    let zdtm = std::env::var_os("ZDTM_DIR").map_or_else(|| PathBuf::from("/tmp/upstream-criu/test"), PathBuf::from);
    if !criu.exists() || !zdtm.join("zdtm.py").exists() {
        let why = format!(
            "interop: SKIPPED: CRIU 4.2 is not built here ({} / {}); ../shared/tools/upstream-criu.sh builds it\n",
            criu.display(),
            zdtm.join("zdtm.py").display()
        );
        print!("{why}");
        std::fs::write(&matrix_file, why)?;
        return Ok(());
    }
    let rs = match flag_value(args, "--bin")? {
        Some(b) => std::fs::canonicalize(b).with_context(|| format!("--bin {b}"))?,
        None => {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let st = Command::new(cargo).args(["build", "--release", "-p", "criu-cli"]).current_dir(root).status()?;
            if !st.success() {
                bail!("building criu-rs failed");
            }
            root.join("target/release/criu-rs")
        }
    };
    let pick = |list: Option<&str>| -> Option<Vec<String>> { list.map(|l| l.split(',').map(String::from).collect()) };
    let want_tests = pick(flag_value(args, "--tests")?);
    let want_modes = pick(flag_value(args, "--modes")?);
    let tests: Vec<&(&str, &str)> =
        TESTS.iter().filter(|(_, t)| want_tests.as_ref().is_none_or(|w| w.iter().any(|x| t.ends_with(x.as_str())))).collect();
    let modes: Vec<&(&str, &[&str])> = MODES.iter().filter(|(m, _)| want_modes.as_ref().is_none_or(|w| w.iter().any(|x| x == m))).collect();
    // zdtm writes into its own tree: take turns with criu-cli/tests/zdtm.rs.
    let lock = std::fs::OpenOptions::new().create(true).append(true).open("/tmp/criu-rs-zdtm.lock")?;
    // SAFETY: flock on a descriptor we own; blocks until the lock is ours.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!("flock /tmp/criu-rs-zdtm.lock: {}", std::io::Error::last_os_error());
    }
    let bin = |who: &str| if who == "criu" { criu.clone() } else { rs.clone() };
    let mut table = String::new();
    writeln!(table, "CRIU {} ({}) and criu-rs ({}); zdtm -f h; cells: zdtm's verdict", criu_version(&criu), criu.display(), rs.display())?;
    for (mode, mode_opts) in &modes {
        writeln!(table, "\nmode {mode}:")?;
        write!(table, "{:<18} {:<28}", "program", "zdtm test")?;
        for (d, r) in PAIRS {
            write!(table, " {:<17}", format!("{d}->{r}"))?;
        }
        writeln!(table)?;
        let mut cells: Vec<Vec<String>> = vec![Vec::new(); tests.len()];
        for (d, r) in PAIRS {
            let wrapper = out_dir.join(format!("criu-{d}-{r}"));
            std::fs::write(&wrapper, wrapper_script(&bin(d), &bin(r)))?;
            std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
            let log = out_dir.join(format!("{mode}-{d}-{r}.log"));
            let verdicts = run_zdtm(&zdtm, &wrapper, tests.iter().map(|t| t.1), mode_opts, &log)?;
            for (i, (_, t)) in tests.iter().enumerate() {
                cells[i].push(verdicts.iter().find(|(n, _)| n == t).map_or("no verdict".into(), |(_, v)| v.clone()));
            }
            eprintln!("interop: {mode} {d} -> {r}: done (log {})", log.display());
        }
        for (i, (what, t)) in tests.iter().enumerate() {
            write!(table, "{what:<18} {:<28}", t.trim_start_matches("zdtm/"))?;
            for c in &cells[i] {
                write!(table, " {c:<17}")?;
            }
            writeln!(table)?;
        }
    }
    print!("{table}");
    std::fs::write(&matrix_file, &table)?;
    println!("(written to {}; zdtm's logs beside it)", matrix_file.display());
    Ok(())
}

/// A `criu` for zdtm: `dump`/`pre-dump` run `dumper`, anything else
/// (restore, page-server, lazy-pages, check) `restorer`.
fn wrapper_script(dumper: &Path, restorer: &Path) -> String {
    format!(
        "#!/bin/sh\n# Written by cargo xtask interop: dumps with one tool, does the rest with the other.\ncase \"$1\" in\n  dump|pre-dump) exec {} \"$@\" ;;\n  *) exec {} \"$@\" ;;\nesac\n",
        dumper.display(),
        restorer.display()
    )
}

fn criu_version(criu: &Path) -> String {
    let out = Command::new(criu).arg("--version").output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    out.lines().next().and_then(|l| l.split_whitespace().last()).unwrap_or("?").to_string()
}

/// Runs zdtm on `tests` with `criu` as its binary; each test's verdict
/// ("PASS", "FAIL at <stage>", "SKIP").
fn run_zdtm<'a>(zdtm: &Path, criu: &Path, tests: impl Iterator<Item = &'a str>, opts: &[&str], log: &Path) -> Result<Vec<(String, String)>> {
    let mut cmd = Command::new("python3");
    cmd.current_dir(zdtm).args(["zdtm.py", "run", "-f", "h", "--keep-going", "--criu-bin"]).arg(criu).args(opts);
    for t in tests {
        cmd.args(["-t", t]);
    }
    let f = std::fs::File::create(log)?;
    cmd.env("PATH", "/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin").stdin(Stdio::null()).stdout(f.try_clone()?).stderr(f);
    cmd.status().context("python3 zdtm.py")?;
    let text = String::from_utf8_lossy(&std::fs::read(log)?).into_owned();
    Ok(verdicts(&text))
}

/// zdtm's verdict lines: "==== Test NAME PASS ====", "#### Test NAME FAIL
/// at STAGE ####", "Skipping NAME (why)".
fn verdicts(out: &str) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().skip_while(|w| w.chars().all(|c| c == '=' || c == '#')).collect();
        match words.as_slice() {
            ["Test", name, "PASS", ..] => v.push((name.to_string(), "PASS".into())),
            ["Test", name, "FAIL", rest @ ..] => {
                let at: Vec<&str> = rest.iter().take_while(|w| !w.chars().all(|c| c == '#')).copied().collect();
                v.push((name.to_string(), format!("FAIL {}", at.join(" ").trim_start_matches("at ").trim_start_matches("CRIU ")).trim().to_string()));
            }
            ["Skipping", name, ..] => v.push((name.to_string(), "SKIP".into())),
            _ => {}
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_as_zdtm_prints_them() {
        let out = "======== Test zdtm/static/env00 PASS ========\n\
                   ########## Test zdtm/static/pipe00 FAIL at CRIU restore ##########\n\
                   Skipping zdtm/static/tun (no tun feature)\n";
        assert_eq!(
            verdicts(out),
            [
                ("zdtm/static/env00".to_string(), "PASS".to_string()),
                ("zdtm/static/pipe00".to_string(), "FAIL restore".to_string()),
                ("zdtm/static/tun".to_string(), "SKIP".to_string())
            ]
        );
    }

    #[test]
    fn the_wrapper_dumps_with_one_and_restores_with_the_other() {
        let s = wrapper_script(Path::new("/a/criu"), Path::new("/b/criu-rs"));
        assert!(s.contains("dump|pre-dump) exec /a/criu \"$@\""), "{s}");
        assert!(s.contains("*) exec /b/criu-rs \"$@\""), "{s}");
    }
}
