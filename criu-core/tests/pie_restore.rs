//! Integration tests of the restore stages inside the blob: the
//! `pie-restore-check` program maps the blob and runs the memory, vDSO and
//! sigreturn test entries, natively and under `qemu-x86_64` (where there
//! is no vDSO, so a dumped vDSO copy gets syscall stubs: the vDSO-differs
//! path).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CHECK: &str = env!("CARGO_BIN_EXE_pie-restore-check");

/// qemu-x86_64 on PATH; missing is a failure under CI, else a loud skip.
fn qemu() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let found = std::env::split_paths(&path).map(|d| d.join("qemu-x86_64")).find(|p| p.is_file());
    if found.is_none() {
        assert!(std::env::var_os("CI").is_none(), "qemu-x86_64 missing under CI");
        eprintln!("\n*** SKIPPED: qemu-x86_64 not found ***\n");
    }
    found
}

fn check(qemu: Option<&Path>, args: &[&str]) -> String {
    let out: Output = match qemu {
        Some(q) => Command::new(q).arg(CHECK).args(args).output(),
        None => Command::new(CHECK).args(args).output(),
    }
    .expect("run pie-restore-check");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.starts_with("ok: "),
        "{qemu:?} {args:?}: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// This process's vDSO image written to a temporary file (removed on drop).
struct VdsoFile(PathBuf);

impl VdsoFile {
    fn new(tag: &str) -> Self {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps.lines().find(|l| l.ends_with("[vdso]")).expect("no [vdso]");
        let (a, b) = line.split_whitespace().next().unwrap().split_once('-').unwrap();
        let (a, b) = (usize::from_str_radix(a, 16).unwrap(), usize::from_str_radix(b, 16).unwrap());
        // SAFETY: the vDSO is mapped readable for the life of the process.
        let img = unsafe { std::slice::from_raw_parts(a as *const u8, b - a) };
        let path = std::env::temp_dir().join(format!("criu-rs-vdso-{}-{tag}.img", std::process::id()));
        std::fs::write(&path, img).unwrap();
        Self(path)
    }
}

impl Drop for VdsoFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn memory_stages_natively() {
    for seed in ["1", "7", "12345"] {
        let out = check(None, &["memory", seed]);
        assert!(!out.contains(" 0 used the bounce area"), "no layout needed the bounce area: {out}");
    }
}

#[test]
fn memory_stages_under_qemu() {
    let Some(q) = qemu() else { return };
    check(Some(&q), &["memory", "3", "--no-smaps"]);
}

#[test]
fn vdso_copy_redirected_natively() {
    let img = VdsoFile::new("native");
    let p = img.0.to_str().unwrap();
    assert!(check(None, &["vdso", p, "jump-near"]).contains("jmp rel32"));
    assert!(check(None, &["vdso", p, "jump-far"]).contains("movabs"));
    assert!(check(None, &["vdso", p, "stub"]).contains("syscall stub"));
}

#[test]
fn vdso_copy_stubbed_under_qemu_without_vdso() {
    let Some(q) = qemu() else { return };
    let img = VdsoFile::new("qemu");
    assert!(check(Some(&q), &["vdso", img.0.to_str().unwrap(), "stub"]).contains("syscall stub"));
}

#[test]
fn sigreturn_natively() {
    check(None, &["sigreturn"]);
}

#[test]
fn sigreturn_under_qemu() {
    let Some(q) = qemu() else { return };
    check(Some(&q), &["sigreturn"]);
}
