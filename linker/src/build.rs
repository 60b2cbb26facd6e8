//! The build driver: compiles `restorer-pie` with a nested `cargo build`
//! and packs the resulting ELF into a package file.
//!
//! The nested cargo gets its own target directory (so it never waits on
//! the outer build's lock) and a cleaned environment: everything an outer
//! cargo or build script exports (`RUSTFLAGS`, `CARGO_TARGET_DIR`,
//! `CARGO_BUILD_*`, `CARGO_CFG_*`, `CARGO_FEATURE_*`, jobserver
//! `MAKEFLAGS`, wrappers, ...) is removed, and the blob's own flags
//! (`-C relocation-model=pie`) are passed in `CARGO_ENCODED_RUSTFLAGS`.
//! The link arguments come from `restorer-pie/build.rs`.

use crate::pack::{pack_file, PackError};
use crate::package::Package;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The target the blob is built for.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";
/// Compiler flags for the blob (joined with 0x1f for `CARGO_ENCODED_RUSTFLAGS`).
pub const BLOB_RUSTFLAGS: &[&str] = &["-Crelocation-model=pie"];

/// Why building or packaging the blob failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot run `{cargo}`: {source}")]
    Spawn { cargo: String, source: std::io::Error },
    #[error("`cargo build` of the restorer blob failed ({status}); its output is above")]
    CargoFailed { status: std::process::ExitStatus },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot package {path}: {source}")]
    Pack { path: PathBuf, source: PackError },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// What to build and where.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The `restorer-pie` crate directory (holding its Cargo.toml).
    pub crate_dir: PathBuf,
    /// The nested build's target directory (never the outer one).
    pub target_dir: PathBuf,
    /// The cargo to run; `$CARGO` (set by an outer cargo) or `cargo`.
    pub cargo: PathBuf,
}

impl BuildOptions {
    /// Options for `crate_dir`, building into `target_dir`.
    pub fn new(crate_dir: impl Into<PathBuf>, target_dir: impl Into<PathBuf>) -> Self {
        let cargo = std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
        Self { crate_dir: crate_dir.into(), target_dir: target_dir.into(), cargo }
    }

    /// Where the linked blob ELF ends up.
    pub fn elf_path(&self) -> PathBuf {
        self.target_dir.join(TARGET).join("release").join("restorer-pie")
    }
}

/// The `restorer-pie` directory of this source tree.
pub fn default_crate_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("restorer-pie")
}

/// Files whose change must rebuild the blob (for `cargo:rerun-if-changed`).
pub fn inputs(crate_dir: &Path) -> Vec<PathBuf> {
    vec![
        crate_dir.join("src"),
        crate_dir.join("Cargo.toml"),
        crate_dir.join("Cargo.lock"),
        crate_dir.join("build.rs"),
        crate_dir.join("..").join("linker").join("restorer.ld"),
    ]
}

/// Whether an inherited variable must not reach the nested cargo.
fn leaks_from_outer_build(key: &OsStr) -> bool {
    let Some(key) = key.to_str() else { return false };
    const KEEP: &[&str] = &["CARGO_HOME", "CARGO_NET_", "CARGO_HTTP_", "CARGO_REGISTRIES_", "CARGO_REGISTRY_", "CARGO_TERM_"];
    const DROP: &[&str] = &[
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_LINKER",
        "MAKEFLAGS",
        "MFLAGS",
        "TARGET",
        "HOST",
        "OUT_DIR",
        "PROFILE",
        "OPT_LEVEL",
        "DEBUG",
        "NUM_JOBS",
        "CARGO",
    ];
    if KEEP.iter().any(|k| key == *k || (k.ends_with('_') && key.starts_with(k))) {
        return false;
    }
    DROP.contains(&key) || key.starts_with("CARGO_") || key.starts_with("__CARGO") || key.starts_with("DEP_")
}

/// Runs the nested `cargo build --release` and returns the blob ELF's path.
pub fn build_elf(opts: &BuildOptions) -> Result<PathBuf, BuildError> {
    let mut cmd = Command::new(&opts.cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--manifest-path")
        .arg(opts.crate_dir.join("Cargo.toml"))
        .args(["--target", TARGET, "--bin", "restorer-pie"])
        .arg("--target-dir")
        .arg(&opts.target_dir)
        .current_dir(&opts.crate_dir);
    for (key, _) in std::env::vars_os() {
        if leaks_from_outer_build(&key) {
            cmd.env_remove(key);
        }
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", BLOB_RUSTFLAGS.join("\x1f"));
    // Cargo's stdout would be parsed as directives inside a build script:
    // send everything to stderr.
    cmd.stdout(stderr_stdio()).stderr(Stdio::inherit());
    let status = cmd.status().map_err(|source| BuildError::Spawn { cargo: opts.cargo.display().to_string(), source })?;
    if !status.success() {
        return Err(BuildError::CargoFailed { status });
    }
    Ok(opts.elf_path())
}

fn stderr_stdio() -> Stdio {
    use std::os::fd::AsFd;
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => Stdio::from(fd),
        Err(_) => Stdio::null(),
    }
}

/// Builds the blob, packs it and writes the package to `out` (atomically).
pub fn build_package(opts: &BuildOptions, out: &Path) -> Result<Package, BuildError> {
    let elf = build_elf(opts)?;
    let pkg = pack_file(&elf)?;
    write_package(&pkg, out)?;
    Ok(pkg)
}

/// Writes `pkg` to `out` through a temporary file and a rename.
pub fn write_package(pkg: &Package, out: &Path) -> Result<(), BuildError> {
    let tmp = out.with_extension("tmp");
    let write_err = |source| BuildError::Write { path: out.to_owned(), source };
    std::fs::write(&tmp, pkg.to_bytes()).map_err(write_err)?;
    std::fs::rename(&tmp, out).map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outer_build_variables_are_dropped() {
        for k in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "CARGO_MAKEFLAGS", "MAKEFLAGS", "MFLAGS", "RUSTC_WRAPPER", "CARGO_PRIMARY_PACKAGE", "CARGO_CFG_TARGET_OS", "CARGO_FEATURE_STD", "CARGO_PROFILE_RELEASE_PANIC", "OUT_DIR", "TARGET", "CARGO"] {
            assert!(leaks_from_outer_build(OsStr::new(k)), "{k} would leak");
        }
        for k in ["CARGO_HOME", "CARGO_NET_OFFLINE", "CARGO_TERM_COLOR", "PATH", "HOME", "RUSTUP_TOOLCHAIN", "RUSTC"] {
            assert!(!leaks_from_outer_build(OsStr::new(k)), "{k} would be dropped");
        }
    }
}
