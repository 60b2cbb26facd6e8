//! Integration tests: the blob mapped at several addresses by the
//! `pie-loader` test program, run natively and under `qemu-x86_64`, and
//! the syscall sequence of `pie_selftest_write` as `qemu-x86_64 -strace`
//! reports it.

use criu_core::abi::SELFTEST_WRITE_MESSAGE;
use std::process::{Command, Output};

const LOADER: &str = env!("CARGO_BIN_EXE_pie-loader");

/// Load addresses: the lowest one mmap_min_addr allows, a high one, one in
/// the middle, and one that is page aligned but not 2 MiB aligned.
const ADDRESSES: [&str; 4] = ["0x10000", "0x7f0000000000", "0x5a5a00000000", "0x12345000"];
const ENTRIES: [&str; 3] = [
    "pie_selftest_reloc",
    "pie_selftest_syscall",
    "pie_selftest_write",
];

mod common;

use common::qemu;

fn run(prefix: &[&str], args: &[&str]) -> Output {
    let (program, rest) = match prefix.split_first() {
        Some((p, rest)) => (*p, [rest, &[LOADER]].concat()),
        None => (LOADER, vec![]),
    };
    Command::new(program)
        .args(rest)
        .args(args)
        .output()
        .expect("run pie-loader")
}

fn assert_ok(out: &Output, what: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what}: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn check_all(prefix: &[&str]) {
    for addr in ADDRESSES {
        for entry in ENTRIES {
            let out = run(prefix, &[addr, entry]);
            assert_ok(&out, &format!("{prefix:?} {entry} at {addr}"));
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                stdout.contains(&format!("ok: {entry} at {addr}")),
                "no ok line for {entry} at {addr}: {stdout}"
            );
        }
    }
}

#[test]
fn selftests_pass_natively_at_every_address() {
    check_all(&[]);
}

#[test]
fn selftests_pass_under_qemu_at_every_address() {
    let qemu = qemu();
    check_all(&[qemu.to_str().expect("utf-8 path")]);
}

#[test]
fn write_selftest_message_reaches_stdout() {
    let out = run(&[], &["0x12345000", "pie_selftest_write"]);
    assert_ok(&out, "pie_selftest_write");
    let msg = std::str::from_utf8(SELFTEST_WRITE_MESSAGE).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(msg));
}

#[test]
fn loader_reports_a_taken_or_misaligned_address() {
    let out = run(&[], &["0x12345008", "pie_selftest_reloc"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not page aligned"));
    let out = run(&[], &["0x12345000", "no_such_entry"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no entry point `no_such_entry`"));
}

/// Parses a `qemu -strace` line `PID name(args) = ret` into (name, args, ret).
fn parse_strace(line: &str) -> Option<(&str, &str, &str)> {
    let (_pid, call) = line.split_once(' ')?;
    let (name, rest) = call.split_once('(')?;
    let (args, ret) = rest.rsplit_once(") = ")?;
    Some((name, args, ret.trim()))
}

#[test]
fn write_selftest_syscall_sequence_under_qemu_strace() {
    let qemu = qemu();
    // Low 32 bits distinct from small offsets: qemu 7.2's -strace prints
    // only the low 32 bits of write's buffer pointer.
    let base = 0x5a5a_1234_5000u64;
    let out = run(
        &[qemu.to_str().unwrap(), "-strace"],
        &[&format!("{base:#x}"), "pie_selftest_write"],
    );
    assert_ok(&out, "qemu -strace pie_selftest_write");
    let trace = String::from_utf8_lossy(&out.stderr);
    let calls: Vec<_> = trace.lines().filter_map(parse_strace).collect();
    let len = SELFTEST_WRITE_MESSAGE.len().to_string();
    let found = calls.windows(3).find(|w| {
        w[0].0 == "getpid"
            && w[1].0 == "write"
            && w[1].1.starts_with("1,")
            && w[1].1.ends_with(&format!(",{len}"))
            && w[2].0 == "gettid"
    });
    let Some(w) = found else {
        panic!("no getpid / write(1, .., {len}) / gettid sequence in the trace:\n{trace}");
    };
    assert_eq!(w[1].2, len, "write returned {}", w[1].2);
    // The message the blob wrote lies inside the blob's own mapping.
    let buf = w[1].1.split(',').nth(1).unwrap();
    let buf = u64::from_str_radix(buf.trim_start_matches("0x"), 16).unwrap() & 0xffff_ffff;
    let low = base & 0xffff_ffff;
    assert!(
        (low..low + (1 << 20)).contains(&buf),
        "write buffer {buf:#x} is not inside the blob at {base:#x}"
    );
}
