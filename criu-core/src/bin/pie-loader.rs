//! Test support: maps the embedded restorer blob at a given address in this
//! process, runs one self-test entry and checks its result.
//!
//! Usage: `pie-loader <hex address> <entry>|all`; exits 0 and prints `ok:`
//! lines on success, prints `FAIL:` and exits 1 otherwise. The integration
//! tests run it natively and under `qemu-x86_64`.

use criu_core::abi::{
    SelftestRelocArgs, SelftestSyscallArgs, SelftestWriteArgs, SELFTEST_RELOC_CHECKSUM, SELFTEST_WRITE_MESSAGE,
};
use criu_core::pie::{self, Loaded};
use std::io::Write;
use std::process::ExitCode;

const ENTRIES: [&str; 3] = ["pie_selftest_reloc", "pie_selftest_syscall", "pie_selftest_write"];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("FAIL: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, which] = &args[..] else {
        return Err("usage: pie-loader <hex address> <entry>|all".into());
    };
    let addr = usize::from_str_radix(addr.trim_start_matches("0x"), 16).map_err(|e| format!("bad address {addr}: {e}"))?;
    let pkg = pie::embedded().map_err(|e| e.to_string())?;
    let loaded = Loaded::map_at(pkg, addr).map_err(|e| e.to_string())?;
    let names: Vec<&str> = if which == "all" { ENTRIES.to_vec() } else { vec![which.as_str()] };
    for name in names {
        check(&loaded, name)?;
        println!("ok: {name} at {addr:#x}");
    }
    Ok(())
}

/// Runs entry `name` and checks what it reports.
fn check(loaded: &Loaded, name: &str) -> Result<(), String> {
    if loaded.entry(name).is_none() {
        return Err(pie::PieError::NoSuchEntry(name.to_owned()).to_string());
    }
    let inside = |what: &str, a: u64| {
        let range = loaded.base() as u64..(loaded.base() + loaded.len()) as u64;
        if range.contains(&a) {
            Ok(())
        } else {
            Err(format!("{name}: {what} {a:#x} is outside the blob {range:#x?}: relocation not applied?"))
        }
    };
    let call = |args: *mut u8| {
        // SAFETY: each caller passes the argument struct its entry expects;
        // all self-test entries return.
        unsafe { loaded.call(name, args) }.map_err(|e| e.to_string())
    };
    match name {
        "pie_selftest_reloc" => {
            let mut a = SelftestRelocArgs::default();
            let rc = call((&raw mut a).cast())?;
            if rc != 0 || a.checksum != SELFTEST_RELOC_CHECKSUM {
                return Err(format!("{name}: rc {rc}, checksum {} (want {SELFTEST_RELOC_CHECKSUM})", a.checksum));
            }
            inside("table", a.table_addr)?;
            inside("string pointer", a.name_addr)?;
            inside("function pointer", a.fn_addr)
        }
        "pie_selftest_syscall" => {
            let mut a = SelftestSyscallArgs::default();
            let rc = call((&raw mut a).cast())?;
            if rc != 0 || (a.close_errno, a.open_errno) != (9, 2) {
                return Err(format!("{name}: rc {rc}, close errno {} (want 9), open errno {} (want 2)", a.close_errno, a.open_errno));
            }
            Ok(())
        }
        "pie_selftest_write" => {
            std::io::stdout().flush().map_err(|e| e.to_string())?;
            let mut a = SelftestWriteArgs { fd: 1, ..Default::default() };
            let rc = call((&raw mut a).cast())?;
            let (pid, tid) = (std::process::id() as u64, rustix::thread::gettid().as_raw_nonzero().get() as u64);
            if rc != SELFTEST_WRITE_MESSAGE.len() as i64 || a.pid != pid || a.tid != tid {
                return Err(format!("{name}: rc {rc}, pid {} (want {pid}), tid {} (want {tid})", a.pid, a.tid));
            }
            Ok(())
        }
        other => Err(format!("unknown entry {other}")),
    }
}
