//! The network lock: while a dumped tree is down, no packet of its TCP
//! connections may reach the host's stack, which finds no socket and
//! answers with a reset (the peer then drops the connection). As CRIU does
//! for a tree that shares the host's network namespace, each connection is
//! locked on its own, with the method the dump chose (recorded in the
//! inventory, so that restore, ours or CRIU's, removes the same rules):
//!
//! - [`LockMethod::Iptables`] (CRIU's default): two rules per connection,
//!   `-I INPUT` for packets from the peer and `-I OUTPUT` for packets to
//!   it, `DROP` unless marked `0xC114` (CRIU's `SOCCR_MARK`); unlocking
//!   deletes exactly these rules (`-D`). IPv6 connections go through
//!   `ip6tables`, v4-mapped ones through `iptables`.
//! - [`LockMethod::Nftables`]: a table `inet CRIU-<run id>` with input and
//!   output chains dropping what matches the sets `conns4`/`conns6`, one
//!   element per direction of each connection; unlocking deletes the
//!   table. The name is the dump's run id cut as CRIU cuts it (its buffer
//!   holds 31 characters), so CRIU finds the table too.
//! - [`LockMethod::Skip`]: nothing (the user locks the network).
//!
//! The rules are written exactly as CRIU writes them (the same command
//! lines), so a dump locked by one tool is unlocked by the other.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};

/// CRIU's `SOCCR_MARK`: packets so marked pass the lock.
pub const SOCCR_MARK: &str = "0xC114";

/// How connections are locked (`--network-lock`; the inventory's
/// `network_lock_method`, with CRIU's values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LockMethod {
    /// `iptables`/`ip6tables` rules per connection.
    #[default]
    Iptables = 0,
    /// An nftables table per dump.
    Nftables = 1,
    /// No lock.
    Skip = 2,
}

impl LockMethod {
    /// The method an inventory names (`None`: images older than the field,
    /// which CRIU locked with iptables).
    pub fn from_inventory(v: Option<u32>) -> Option<LockMethod> {
        match v {
            None | Some(0) => Some(LockMethod::Iptables),
            Some(1) => Some(LockMethod::Nftables),
            Some(2) => Some(LockMethod::Skip),
            Some(_) => None,
        }
    }
}

impl std::str::FromStr for LockMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "iptables" => Ok(LockMethod::Iptables),
            "nftables" => Ok(LockMethod::Nftables),
            "skip" => Ok(LockMethod::Skip),
            _ => Err(format!("unknown network lock method {s:?} (iptables, nftables or skip)")),
        }
    }
}

/// One TCP connection, from the dumped socket's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

/// Why locking or unlocking failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The tool could not be run.
    #[error("running {cmd}: {source} (is it installed? `--network-lock skip` locks nothing)")]
    Spawn {
        /// The command line.
        cmd: String,
        /// Why.
        source: std::io::Error,
    },
    /// The tool failed.
    #[error("{cmd} failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it said.
        stderr: String,
    },
}

/// The locks of one dump (or the ones a restore takes off).
#[derive(Debug)]
pub struct NetLock {
    method: LockMethod,
    /// The nftables table (`CRIU-...`, family `inet`).
    table: String,
    /// Whether this process created the table.
    table_made: bool,
}

/// A fresh run id (a random UUID, as CRIU's `criu_run_id`).
pub fn new_run_id() -> String {
    match std::fs::read_to_string("/proc/sys/kernel/random/uuid") {
        Ok(s) => s.trim().to_owned(),
        Err(_) => format!("{:08x}-{:x}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())),
    }
}

/// The nftables table of run `run_id`: "inet CRIU-<run id>" cut to 31
/// characters, as CRIU's `nftables_get_table` leaves it.
pub fn nft_table(run_id: &str) -> String {
    let full = format!("CRIU-{run_id}");
    full.chars().take(31 - "inet ".len()).collect()
}

/// A v4-mapped IPv6 address as IPv4 (CRIU locks those with iptables).
fn unmap(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    }
}

impl NetLock {
    /// The lock of a dump with run id `run_id`.
    pub fn new(method: LockMethod, run_id: &str) -> NetLock {
        NetLock { method, table: nft_table(run_id), table_made: false }
    }

    /// The method.
    pub fn method(&self) -> LockMethod {
        self.method
    }

    /// Drops every packet of `c` from now on.
    pub fn lock(&mut self, c: &Conn) -> Result<(), LockError> {
        match self.method {
            LockMethod::Skip => Ok(()),
            LockMethod::Iptables => {
                iptables(c, "INPUT", true)?;
                if let Err(e) = iptables(c, "OUTPUT", true) {
                    let _ = iptables(c, "INPUT", false);
                    return Err(e);
                }
                Ok(())
            }
            LockMethod::Nftables => {
                let mut script = String::new();
                if !self.table_made {
                    script = nft_table_script(&self.table);
                }
                let (v, a, b) = nft_elements(c);
                let _ = writeln!(script, "add element inet {} conns{v} {{ {a} }}", self.table);
                let _ = writeln!(script, "add element inet {} conns{v} {{ {b} }}", self.table);
                nft(&script)?;
                self.table_made = true;
                Ok(())
            }
        }
    }

    /// Lets the packets of `c` through again (iptables: deletes its two
    /// rules; nftables: nothing, [`Self::unlock_all`] deletes the table).
    pub fn unlock(&self, c: &Conn) -> Result<(), LockError> {
        match self.method {
            LockMethod::Iptables => {
                let r = iptables(c, "INPUT", false);
                iptables(c, "OUTPUT", false).and(r)
            }
            LockMethod::Nftables | LockMethod::Skip => Ok(()),
        }
    }

    /// Ends the lock of the whole dump: nftables deletes the table (when
    /// this process made it, or `restoring`, when the dump did).
    pub fn unlock_all(&mut self, restoring: bool) -> Result<(), LockError> {
        if self.method != LockMethod::Nftables || !(self.table_made || restoring) {
            return Ok(());
        }
        self.table_made = false;
        nft(&format!("delete table inet {}\n", self.table))
    }
}

/// `iptables -w -t filter -I|-D CHAIN --protocol tcp -m mark ! --mark
/// 0xC114 --source S --sport SP --destination D --dport DP -j DROP`, INPUT
/// matching packets from the peer, OUTPUT packets to it (CRIU's rule).
fn iptables(c: &Conn, chain: &str, insert: bool) -> Result<(), LockError> {
    let (local, peer) = (unmap(c.local.ip()), unmap(c.peer.ip()));
    let tool = if peer.is_ipv4() { "iptables" } else { "ip6tables" };
    let ((src, sport), (dst, dport)) =
        if chain == "INPUT" { ((peer, c.peer.port()), (local, c.local.port())) } else { ((local, c.local.port()), (peer, c.peer.port())) };
    let args: Vec<String> = [
        "-w",
        "-t",
        "filter",
        if insert { "-I" } else { "-D" },
        chain,
        "--protocol",
        "tcp",
        "-m",
        "mark",
        "!",
        "--mark",
        SOCCR_MARK,
        "--source",
        &src.to_string(),
        "--sport",
        &sport.to_string(),
        "--destination",
        &dst.to_string(),
        "--dport",
        &dport.to_string(),
        "-j",
        "DROP",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    run(Command::new(tool).args(&args), &format!("{tool} {}", args.join(" ")), None)
}

/// CRIU's table: input/output chains, marked packets accepted, the
/// connections of `conns4`/`conns6` dropped.
fn nft_table_script(t: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "create table inet {t}");
    for (chain, hook) in [("output", "output"), ("input", "input")] {
        let _ = writeln!(s, "add chain inet {t} {chain} {{ type filter hook {hook} priority 0; }}");
        let _ = writeln!(s, "add rule inet {t} {chain} meta mark {SOCCR_MARK} accept");
    }
    let _ = writeln!(s, "add set inet {t} conns4 {{ type ipv4_addr . inet_service . ipv4_addr . inet_service; }}");
    let _ = writeln!(s, "add rule inet {t} output ip saddr . tcp sport . ip daddr . tcp dport @conns4 drop");
    let _ = writeln!(s, "add rule inet {t} input ip saddr . tcp sport . ip daddr . tcp dport @conns4 drop");
    let _ = writeln!(s, "add set inet {t} conns6 {{ type ipv6_addr . inet_service . ipv6_addr . inet_service; }}");
    let _ = writeln!(s, "add rule inet {t} output ip6 saddr . tcp sport . ip6 daddr . tcp dport @conns6 drop");
    let _ = writeln!(s, "add rule inet {t} input ip6 saddr . tcp sport . ip6 daddr . tcp dport @conns6 drop");
    s
}

/// The set (4 or 6) and the two elements of `c`: peer to local, local to
/// peer (each `saddr . sport . daddr . dport`).
fn nft_elements(c: &Conn) -> (char, String, String) {
    let (local, peer) = (unmap(c.local.ip()), unmap(c.peer.ip()));
    let v = if peer.is_ipv4() { '4' } else { '6' };
    let (lp, pp) = (c.local.port(), c.peer.port());
    (v, format!("{peer} . {pp} . {local} . {lp}"), format!("{local} . {lp} . {peer} . {pp}"))
}

/// `nft -f -` with `script` on its stdin.
fn nft(script: &str) -> Result<(), LockError> {
    run(Command::new("nft").args(["-f", "-"]), &format!("nft -f - <<< {script:?}"), Some(script))
}

fn run(cmd: &mut Command, line: &str, stdin: Option<&str>) -> Result<(), LockError> {
    tracing::debug!(cmd = line, "network lock");
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| LockError::Spawn { cmd: line.to_owned(), source })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(|source| LockError::Spawn { cmd: line.to_owned(), source })?;
    if !out.status.success() {
        return Err(LockError::Failed { cmd: line.to_owned(), status: out.status, stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    #[test]
    fn nft_table_is_cut_as_criu_cuts_it() {
        let t = nft_table("0f2c5e1a-8d6e-4b1c-a2b3-0123456789ab");
        assert_eq!(t, "CRIU-0f2c5e1a-8d6e-4b1c-a2");
        assert_eq!(format!("inet {t}").len(), 31);
        assert_eq!(new_run_id().len(), 36);
    }

    #[test]
    fn methods_have_criu_values() {
        assert_eq!(LockMethod::from_inventory(None), Some(LockMethod::Iptables));
        assert_eq!(LockMethod::from_inventory(Some(1)), Some(LockMethod::Nftables));
        assert_eq!(LockMethod::from_inventory(Some(2)), Some(LockMethod::Skip));
        assert_eq!(LockMethod::from_inventory(Some(7)), None);
        assert_eq!("nftables".parse(), Ok(LockMethod::Nftables));
        assert!("ipchains".parse::<LockMethod>().is_err());
    }

    #[test]
    fn mapped_addresses_use_the_v4_tables() {
        let c = Conn { local: "[::ffff:127.0.0.1]:5".parse().unwrap(), peer: "[::ffff:127.0.0.1]:6".parse().unwrap() };
        assert_eq!(nft_elements(&c), ('4', "127.0.0.1 . 6 . 127.0.0.1 . 5".into(), "127.0.0.1 . 5 . 127.0.0.1 . 6".into()));
    }

    /// A locked connection passes nothing (a write is not delivered);
    /// unlocked, the retransmission arrives.
    fn locked_then_unlocked(method: LockMethod, v6: bool) {
        let l = TcpListener::bind(if v6 { "[::1]:0" } else { "127.0.0.1:0" }).unwrap();
        let mut a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut b, _) = l.accept().unwrap();
        let c = Conn { local: a.local_addr().unwrap(), peer: a.peer_addr().unwrap() };
        let mut lock = NetLock::new(method, &new_run_id());
        lock.lock(&c).unwrap();
        let unlock = |lock: &mut NetLock| {
            lock.unlock(&c).unwrap();
            lock.unlock_all(false).unwrap();
        };
        a.write_all(b"x").unwrap();
        b.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut buf = [0u8; 1];
        let r = b.read(&mut buf);
        if r.is_ok() {
            unlock(&mut lock);
            panic!("a byte went through the lock");
        }
        unlock(&mut lock);
        b.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        b.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"x");
    }

    #[test]
    fn iptables_lock_drops_and_unlock_lets_through() {
        locked_then_unlocked(LockMethod::Iptables, false);
        locked_then_unlocked(LockMethod::Iptables, true);
    }

    #[test]
    fn nftables_lock_drops_and_unlock_lets_through() {
        locked_then_unlocked(LockMethod::Nftables, false);
        locked_then_unlocked(LockMethod::Nftables, true);
    }
}
