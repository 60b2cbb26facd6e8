//! `cargo xtask setup`: installs the tools the tests use (qemu-x86_64 from
//! qemu-user, crit and CRIU's Python RPC bindings (pycriu, for the swrk
//! test's client) from criu, iptables and nft for the network lock of
//! TCP connections, a JDK, node, curl and PostgreSQL for the real-program
//! tests) with apt-get when they are missing.

use anyhow::{bail, Result};
use std::process::Command;

/// (command looked up on PATH, Debian package providing it)
/// `javac`: `java Loop.java` (source-file mode) needs the JDK's compiler.
const TOOLS: [(&str, &str); 10] = [
    ("qemu-x86_64", "qemu-user"),
    ("crit", "criu"),
    ("gcc", "gcc"),
    ("iptables", "iptables"),
    ("nft", "nftables"),
    ("javac", "openjdk-17-jdk-headless"),
    ("node", "nodejs"),
    ("curl", "curl"),
    ("psql", "postgresql-client"),
    ("setpriv", "util-linux"),
];

/// PostgreSQL's server programs: on PATH (`initdb`) or where Debian puts
/// them (`/usr/lib/postgresql/VERSION/bin`), as the tests look for them.
fn pg_server_found() -> bool {
    on_path("initdb")
        || std::fs::read_dir("/usr/lib/postgresql")
            .map(|rd| rd.filter_map(|e| e.ok()).any(|e| e.path().join("bin/initdb").is_file()))
            .unwrap_or(false)
}

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

fn run_cmd(program: &str, args: &[&str]) -> Result<()> {
    println!("+ {program} {}", args.join(" "));
    let status = Command::new(program).args(args).status()?;
    if !status.success() {
        bail!("{program} failed: {status}");
    }
    Ok(())
}

pub fn run() -> Result<()> {
    let mut missing = Vec::new();
    for (cmd, pkg) in TOOLS {
        if on_path(cmd) {
            println!("{cmd}: found");
        } else {
            println!("{cmd}: missing, will install package {pkg}");
            missing.push(pkg);
        }
    }
    // criu-cli/tests/swrk.rs's client: Debian's python3 with pycriu.
    let pycriu = Command::new("/usr/bin/python3").args(["-c", "import pycriu.rpc_pb2, pycriu.criu"]).output().is_ok_and(|o| o.status.success());
    if pycriu {
        println!("pycriu: found");
    } else if !missing.contains(&"criu") {
        println!("pycriu: missing, will install packages criu python3-protobuf");
        missing.extend(["criu", "python3-protobuf"]);
    }
    if pg_server_found() {
        println!("initdb: found");
    } else {
        println!("initdb: missing, will install package postgresql");
        missing.push("postgresql");
    }
    if missing.is_empty() {
        println!("nothing to do");
        return Ok(());
    }
    run_cmd("apt-get", &["update"])?;
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(missing);
    run_cmd("apt-get", &args)
}
