//! Shared helpers for the CLI integration tests: compiling the C test
//! programs in `tests/programs/`, starting them under a guard that kills
//! them, running `criu-rs`, and decoding images with `crit`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::sync::Mutex;

static COMPILE_LOCK: Mutex<()> = Mutex::new(());

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// A per-test scratch directory under cargo's target tmpdir, emptied first.
pub fn scratch_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dump-tests").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Compiles `tests/programs/NAME.c` (once per test binary run) and returns the executable.
pub fn compile(name: &str) -> PathBuf {
    let _g = COMPILE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let src = repo_root().join("tests/programs").join(format!("{name}.c"));
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("programs");
    std::fs::create_dir_all(&out_dir).unwrap();
    let exe = out_dir.join(name);
    let fresh = match (std::fs::metadata(&exe), std::fs::metadata(&src)) {
        (Ok(e), Ok(s)) => e.modified().unwrap() >= s.modified().unwrap(),
        _ => false,
    };
    if !fresh {
        let compiler = cc::Build::new()
            .cargo_metadata(false)
            .target("x86_64-unknown-linux-gnu")
            .host("x86_64-unknown-linux-gnu")
            .opt_level(1)
            .get_compiler();
        let tmp = out_dir.join(format!("{name}.tmp"));
        let st = compiler
            .to_command()
            .args(["-Wall", "-pthread", "-o"])
            .arg(&tmp)
            .arg(&src)
            .status()
            .expect("running the C compiler");
        assert!(st.success(), "compiling {}", src.display());
        std::fs::rename(&tmp, &exe).unwrap();
    }
    exe
}

/// A running test program; killed (by pid) and reaped on drop.
pub struct Program {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub stdout: BufReader<ChildStdout>,
    /// The `key=value` pairs of its READY line.
    pub info: HashMap<String, String>,
}

impl Program {
    /// Starts `exe args...` and waits for its `READY` line.
    pub fn start(exe: &Path, args: &[&str]) -> Program {
        let mut cmd = Command::new(exe);
        cmd.args(args).stderr(Stdio::inherit());
        Self::start_cmd(cmd)
    }

    /// Starts `cmd` with piped stdin/stdout and waits for its `READY` line.
    pub fn start_cmd(mut cmd: Command) -> Program {
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("starting the test program");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(line.starts_with("READY"), "test program said {line:?}");
        let info = line
            .split_whitespace()
            .skip(1)
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        Program { child, stdin, stdout, info }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// A hex or decimal value from the READY line.
    pub fn num(&self, key: &str) -> u64 {
        let v = &self.info[key];
        match v.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).unwrap(),
            None => v.parse().unwrap(),
        }
    }

    /// Lets the program run its self-check and returns everything it printed.
    pub fn finish(&mut self) -> String {
        let mut stdin = self.stdin.take().unwrap();
        stdin.write_all(b"g").unwrap();
        drop(stdin);
        let mut out = String::new();
        self.stdout.read_to_string(&mut out).unwrap();
        out
    }

    /// `/proc/PID/maps` now.
    pub fn maps(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/maps", self.pid())).unwrap()
    }

    /// The process's state letter from `/proc/PID/stat`, or None once it is gone.
    pub fn state(&self) -> Option<char> {
        proc_state(self.pid())
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: kill(2) with our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// The state letter of a process, or None if it does not exist.
pub fn proc_state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 2..].chars().next()
}

/// A `criu-rs` command.
pub fn criu_rs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_criu-rs"))
}

/// Runs `criu-rs dump -t PID -D DIR` with extra args.
pub fn dump(pid: i32, dir: &Path, extra: &[&str]) -> Output {
    criu_rs().arg("dump").arg("-t").arg(pid.to_string()).arg("-D").arg(dir).args(extra).output().unwrap()
}

/// Runs `criu-rs dump -t PID -D DIR EXTRA...` with `CRIU_RS_FAIL_AT=point`
/// and asserts it fails at that point without writing an inventory.
pub fn dump_failing_at(pid: i32, dir: &Path, point: &str, extra: &[&str]) {
    let out = criu_rs()
        .args(["dump", "-t", &pid.to_string(), "-D"])
        .arg(dir)
        .args(extra)
        .env("CRIU_RS_FAIL_AT", point)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{point}: dump should fail");
    assert!(err.contains("forced failure"), "{point}: {err}");
    assert!(!dir.join("inventory.img").exists(), "{point}: inventory written");
}

/// Decodes an image with `crit decode` into JSON (numbers stay numbers;
/// `--pretty` would turn flags into names and addresses into hex strings).
pub fn crit_decode(path: &Path) -> serde_json::Value {
    let out = Command::new("crit").args(["decode", "-i"]).arg(path).output().expect("running crit");
    assert!(out.status.success(), "crit decode {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("crit output for {}: {e}", path.display()))
}

/// Parses a number crit printed (it prints some as "0x..." strings).
pub fn jnum(v: &serde_json::Value) -> u64 {
    match v {
        serde_json::Value::Number(n) => n.as_u64().or_else(|| n.as_i64().map(|i| i as u64)).unwrap(),
        serde_json::Value::String(s) => match s.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).unwrap(),
            None => s.parse().unwrap(),
        },
        other => panic!("not a number: {other}"),
    }
}
