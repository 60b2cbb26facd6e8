//! Test program: maps the embedded restorer blob into this process and runs
//! one restore-stage test entry on a `RestoreArgs` block built here, then
//! checks the result from inside. Run natively and under `qemu-x86_64` by
//! `tests/pie_restore.rs`.
//!
//! Usage:
//! - `pie-restore-check memory <seed> [--no-smaps]`: planned remaps of
//!   generated layouts, file mappings, protections, madvise, cleanup;
//! - `pie-restore-check vdso <image> jump-near|jump-far|stub`: a dumped vDSO copy placed
//!   and redirected to the running vDSO (`jump-*`) or to syscall stubs;
//! - `pie-restore-check sigreturn`: sigframe + `rt_sigreturn` into chosen
//!   registers and FPU state, checked by the landing code;
//! - `pie-restore-check full trap|notrap|bad|threads|threads-trap`: the whole `restore_entry`
//!   turning this process into a small restored task (see `full.rs`).
//!
//! Prints `ok: ...` and exits 0 on success, `FAIL: ...` and exits 1.

mod block;
mod full;
mod memory;
mod sigreturn;
mod vdso;

use criu_core::pie::{self, Loaded};
use std::process::ExitCode;

/// Where the blob is mapped (free in this process and under qemu).
const BLOB_AT: usize = 0x3a00_0000_0000;

fn main() -> ExitCode {
    match run() {
        Ok(msg) => {
            println!("ok: {msg}");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("FAIL: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<String, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pkg = pie::embedded().map_err(|e| e.to_string())?;
    let loaded = Loaded::map_at(pkg, BLOB_AT).map_err(|e| e.to_string())?;
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["memory", seed, ref rest @ ..] => {
            let seed = seed.parse().map_err(|e| format!("bad seed: {e}"))?;
            memory::run(&loaded, seed, !rest.contains(&"--no-smaps"))
        }
        ["vdso", image, mode] => vdso::run(&loaded, image, mode),
        ["sigreturn"] => sigreturn::run(&loaded),
        ["full", mode] => full::run(&loaded, mode),
        _ => Err("usage: pie-restore-check memory <seed> [--no-smaps] | vdso <image> jump-near|jump-far|stub | sigreturn | full trap|notrap|bad|threads|threads-trap".into()),
    }
}

/// Calls test entry `name` on `block`; errors carry the status.
fn call(loaded: &Loaded, name: &str, block: &mut block::Block) -> Result<(), String> {
    // SAFETY: the restore test entries take a RestoreArgs block, which
    // `block` is, and return (sigreturn only returns on failure).
    let rc = unsafe { loaded.call(name, block.as_mut_ptr()) }.map_err(|e| e.to_string())?;
    if rc != 0 {
        let s = block.header().status;
        return Err(format!("{name}: rc {rc}, stage {}, error {}, detail {:#x}", s.stage, s.error, s.detail));
    }
    Ok(())
}

/// Protection bits of the mapping containing `addr` per /proc/self/maps,
/// as "rwxp"-style text, or None if unmapped.
fn maps_perms(addr: u64) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        let (a, b) = it.next()?.split_once('-')?;
        let (a, b) = (u64::from_str_radix(a, 16).ok()?, u64::from_str_radix(b, 16).ok()?);
        (a <= addr && addr < b).then(|| it.next().unwrap_or("").to_owned())
    })
}

/// `mmap` of fresh anonymous read-write memory exactly at `addr`
/// (`MAP_GROWSDOWN` if `growsdown`).
pub fn map_fixed(addr: u64, len: u64, growsdown: bool) -> Result<(), String> {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE | if growsdown { libc::MAP_GROWSDOWN } else { 0 };
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping.
    let got = unsafe { libc::mmap(addr as *mut _, len as usize, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
    if got as u64 != addr {
        return Err(format!("cannot map {addr:#x}+{len:#x}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}
