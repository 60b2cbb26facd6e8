//! Established TCP connections through `TCP_REPAIR` (socket option 19).
//!
//! In repair mode a TCP socket sends nothing on its own: closing it drops
//! the connection without FIN or RST, `connect` jumps straight to
//! ESTABLISHED, and its sequence numbers, options and queues can be read
//! and written. A dump puts the socket in repair mode ([`repair_on`]),
//! [`save`]s it and leaves it so (killing the task then closes the
//! connection silently); a restore rebuilds it on a fresh socket in repair
//! mode ([`restore`]) and turns repair off once the task is about to run.
//!
//! ```text
//!            output queue                             input queue
//!  net <------------------------------- sk   net -------------------------> sk
//!        ^ snd_una   ^ snd_nxt    ^ write_seq       ^ copied_seq   ^ rcv_nxt
//!        |<-- sent, not acked -->|<- unsent ->|     |<-- not read yet -->|
//!        |<----------- outq_len ------------->|     |<---- inq_len ----->|
//!                                  outq_seq = write_seq      inq_seq = rcv_nxt
//! ```
//!
//! `TCP_QUEUE_SEQ` reads `write_seq` / `rcv_nxt` for the queue chosen with
//! `TCP_REPAIR_QUEUE`; on restore it sets the start of each queue, and
//! writing a queue's bytes in repair mode advances it again. The unsent tail
//! of the output queue (`unsq_len`, `SIOCOUTQNSD`) is written with repair
//! off, so the stack sends it as new data.
//!
//! Half-closed connections (CRIU's states and image, its order of
//! replaying them): a FIN takes one sequence number, so `inq_seq` /
//! `outq_seq` as saved count the FINs the connection holds, while the
//! queue lengths count data only ([`save`] leaves our FIN out of `SIOCOUTQ`
//! and `SIOCOUTQNSD`). [`restore`] builds the connection ESTABLISHED with
//! the sequence numbers before the FINs; [`go_live`] replays them once
//! every connection of the restore exists, so that what the socket answers
//! finds its peer (or the network lock):
//!
//! ```text
//!  state        in repair mode                 after repair off and the unsent bytes
//!  FIN_WAIT1    -                              shutdown(WR)
//!  FIN_WAIT2    shutdown(WR) in the send       -
//!               queue + forged ACK of our FIN
//!  CLOSE_WAIT   -                              forged FIN
//!  LAST_ACK     -                              forged FIN, shutdown(WR)
//!  CLOSING      -                              shutdown(WR), forged FIN
//! ```
//!
//! Only a socket out of repair mode sends new bytes, and our FIN must
//! follow them; the forged segments come from [`super::tcp_segment`].
//! Other states (SYN_SENT, SYN_RECV, TIME_WAIT) are refused by name
//! ([`RepairError::State`]).

use super::sockopt;
use super::tcp_segment::{self, Segment};
use linux_raw_sys::net as k;
use rustix::fd::{AsFd, BorrowedFd};
use rustix::io::Errno;
use std::net::SocketAddr;

/// `TCP_REPAIR_QUEUE` values.
pub const TCP_NO_QUEUE: u32 = 0;
/// The receive queue.
pub const TCP_RECV_QUEUE: u32 = 1;
/// The send queue.
pub const TCP_SEND_QUEUE: u32 = 2;

/// TCP states (`include/net/tcp_states.h`), as `inet_sk_entry.state` holds them.
pub mod state {
    pub const ESTABLISHED: u32 = 1;
    pub const SYN_SENT: u32 = 2;
    pub const SYN_RECV: u32 = 3;
    pub const FIN_WAIT1: u32 = 4;
    pub const FIN_WAIT2: u32 = 5;
    pub const TIME_WAIT: u32 = 6;
    pub const CLOSE: u32 = 7;
    pub const CLOSE_WAIT: u32 = 8;
    pub const LAST_ACK: u32 = 9;
    pub const LISTEN: u32 = 10;
    pub const CLOSING: u32 = 11;

    /// The kernel's name of a state, for messages.
    pub fn name(s: u32) -> &'static str {
        match s {
            ESTABLISHED => "ESTABLISHED",
            SYN_SENT => "SYN_SENT",
            SYN_RECV => "SYN_RECV",
            FIN_WAIT1 => "FIN_WAIT1",
            FIN_WAIT2 => "FIN_WAIT2",
            TIME_WAIT => "TIME_WAIT",
            CLOSE => "CLOSE",
            CLOSE_WAIT => "CLOSE_WAIT",
            LAST_ACK => "LAST_ACK",
            LISTEN => "LISTEN",
            CLOSING => "CLOSING",
            _ => "unknown",
        }
    }

    /// Whether our FIN is in the send queue (`shutdown(SHUT_WR)` done).
    pub fn fin_sent(s: u32) -> bool {
        matches!(s, FIN_WAIT1 | FIN_WAIT2 | CLOSING | LAST_ACK)
    }

    /// Whether the peer acknowledged our FIN.
    pub fn fin_acked(s: u32) -> bool {
        s == FIN_WAIT2
    }

    /// Whether the peer's FIN is in the receive queue (reads see EOF).
    pub fn fin_received(s: u32) -> bool {
        matches!(s, CLOSE_WAIT | CLOSING | LAST_ACK)
    }

    /// The states a connection is saved and rebuilt in.
    pub fn repairable(s: u32) -> bool {
        s == ESTABLISHED || fin_sent(s) || fin_received(s)
    }
}

/// `TCPOPT_*` option kinds for `TCP_REPAIR_OPTIONS`.
const TCPOPT_MAXSEG: u32 = 2;
const TCPOPT_WINDOW: u32 = 3;
const TCPOPT_SACK_PERM: u32 = 4;
const TCPOPT_TIMESTAMP: u32 = 8;

/// `SIOCINQ`, `SIOCOUTQ`, `SIOCOUTQNSD` (bytes not read; not acked; not sent).
const SIOCINQ: u32 = 0x541b;
const SIOCOUTQ: u32 = 0x5411;
const SIOCOUTQNSD: u32 = 0x894b;

/// Largest single write into a queue while restoring; the kernel builds
/// one linear buffer per write in repair mode, so huge writes fail with
/// `ENOMEM` (they are split further when they do).
const QUEUE_CHUNK: usize = 1 << 20;

/// Why saving or restoring a connection failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RepairError {
    /// A socket call failed.
    #[error("{call}: {errno}")]
    Call {
        /// The call and its option.
        call: &'static str,
        /// What the kernel said.
        errno: Errno,
    },
    /// A state this module does not carry over.
    #[error("TCP connection in state {name} ({0}) cannot be dumped (only ESTABLISHED and half-closed ones)", name = state::name(*.0))]
    State(u32),
    /// Peeking at a queue returned another length than its size.
    #[error("peeking at the {queue} queue: got {got} bytes, {want} queued")]
    ShortQueue {
        /// Which queue.
        queue: &'static str,
        /// Bytes peeked.
        got: usize,
        /// Bytes the queue holds.
        want: usize,
    },
    /// An image value the kernel cannot take.
    #[error("{0}")]
    Bad(String),
}

fn call(call: &'static str) -> impl Fn(Errno) -> RepairError {
    move |errno| RepairError::Call { call, errno }
}

/// `TCP_REPAIR_WINDOW`: the window state (Linux 4.8+).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub snd_wl1: u32,
    pub snd_wnd: u32,
    pub max_window: u32,
    pub rcv_wnd: u32,
    pub rcv_wup: u32,
}

/// One connection's state, as `tcp-stream-INO.img` keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpStream {
    /// TCP state (see [`state::repairable`]).
    pub state: u32,
    /// `rcv_nxt`: the sequence number after the last byte received (and
    /// after the peer's FIN, when received).
    pub inq_seq: u32,
    /// `write_seq`: the sequence number after the last byte queued to send
    /// (and after our FIN, when shut down for writing).
    pub outq_seq: u32,
    /// Bytes at the end of the send queue never sent (data only).
    pub unsq_len: u32,
    /// `TCPI_OPT_*` negotiated options.
    pub opt_mask: u32,
    /// Window scales (valid with `TCPI_OPT_WSCALE`).
    pub snd_wscale: u32,
    pub rcv_wscale: u32,
    /// The peer's MSS clamp.
    pub mss_clamp: u32,
    /// `TCP_TIMESTAMP` (valid with `TCPI_OPT_TIMESTAMPS`).
    pub timestamp: u32,
    /// Window state, when the kernel gave it.
    pub window: Option<Window>,
    /// Received bytes not read yet.
    pub inq: Vec<u8>,
    /// Bytes written and not acknowledged (the last `unsq_len` never sent).
    pub outq: Vec<u8>,
}

/// The head of `struct tcp_info` (the fields this crate reads).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpInfo {
    pub state: u8,
    pub ca_state: u8,
    pub retransmits: u8,
    pub probes: u8,
    pub backoff: u8,
    /// `TCPI_OPT_*`.
    pub options: u8,
    /// `snd_wscale:4, rcv_wscale:4` (low nibble first).
    pub wscale: u8,
    pub delivery_rate_app_limited: u8,
    pub rto: u32,
    pub ato: u32,
    pub snd_mss: u32,
    pub rcv_mss: u32,
    /// For a listener: connections waiting in the accept queue.
    pub unacked: u32,
    /// For a listener: its backlog.
    pub sacked: u32,
}

/// `getsockopt(fd, SOL_TCP, TCP_INFO)`, its first fields.
pub fn tcp_info(fd: impl AsFd) -> Result<TcpInfo, Errno> {
    let mut ti = TcpInfo::default();
    // SAFETY: TcpInfo is plain old data; the kernel writes a prefix of it.
    let buf = unsafe { std::slice::from_raw_parts_mut((&mut ti as *mut TcpInfo).cast::<u8>(), std::mem::size_of::<TcpInfo>()) };
    let n = sockopt::get_bytes(fd, libc::SOL_TCP as u32, k::TCP_INFO, buf)?;
    if n < std::mem::size_of::<TcpInfo>() {
        return Err(Errno::INVAL);
    }
    Ok(ti)
}

/// `setsockopt(fd, SOL_TCP, TCP_REPAIR, 1)`: needs CAP_NET_ADMIN over the
/// socket's network namespace; refused (`EPERM`) for listeners.
pub fn repair_on(fd: impl AsFd) -> Result<(), RepairError> {
    sockopt::set_u32(fd, libc::SOL_TCP as u32, k::TCP_REPAIR, k::TCP_REPAIR_ON).map_err(call("TCP_REPAIR on"))
}

/// `setsockopt(fd, SOL_TCP, TCP_REPAIR, 0)`: the connection goes live (a
/// window probe is sent). The kernel clears `SO_REUSEADDR` on the way: set
/// it back afterwards.
pub fn repair_off(fd: impl AsFd) -> Result<(), RepairError> {
    sockopt::set_u32(fd, libc::SOL_TCP as u32, k::TCP_REPAIR, k::TCP_REPAIR_OFF).map_err(call("TCP_REPAIR off"))
}

fn set_queue(fd: impl AsFd, queue: u32) -> Result<(), RepairError> {
    sockopt::set_u32(fd, libc::SOL_TCP as u32, k::TCP_REPAIR_QUEUE, queue).map_err(call("TCP_REPAIR_QUEUE"))
}

/// Reads a queue's sequence number and, without consuming them, its
/// `len` bytes (`TCP_REPAIR_QUEUE` + `TCP_QUEUE_SEQ` + `recv(MSG_PEEK)`).
fn peek_queue(fd: impl AsFd, queue: u32, len: usize) -> Result<(u32, Vec<u8>), RepairError> {
    let fd = fd.as_fd();
    set_queue(fd, queue)?;
    let seq = sockopt::get_u32(fd, libc::SOL_TCP as u32, k::TCP_QUEUE_SEQ).map_err(call("TCP_QUEUE_SEQ"))?;
    let name = if queue == TCP_RECV_QUEUE { "receive" } else { "send" };
    if len == 0 {
        return Ok((seq, Vec::new()));
    }
    // One byte more than queued: a longer queue than its size shows.
    let mut buf = vec![0u8; len + 1];
    let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
    let (got, _) = rustix::net::recv(fd, &mut buf[..], flags).map_err(call("recv(MSG_PEEK) of a TCP queue"))?;
    if got != len {
        return Err(RepairError::ShortQueue { queue: name, got, want: len });
    }
    buf.truncate(len);
    Ok((seq, buf))
}

/// Reads the state of a connection in repair mode. Nothing is consumed:
/// turning repair off again leaves the connection exactly as it was.
pub fn save(fd: impl AsFd) -> Result<TcpStream, RepairError> {
    let fd = fd.as_fd();
    let ti = tcp_info(fd).map_err(call("TCP_INFO"))?;
    let st = ti.state as u32;
    if !state::repairable(st) {
        return Err(RepairError::State(st));
    }
    let mut outq_len = sockopt::ioctl_int(fd, SIOCOUTQ).map_err(call("SIOCOUTQ"))? as usize;
    let mut unsq_len = sockopt::ioctl_int(fd, SIOCOUTQNSD).map_err(call("SIOCOUTQNSD"))?;
    if state::fin_sent(st) {
        // Our FIN counts in both while not acknowledged (not sent); it is
        // no data.
        outq_len = outq_len.saturating_sub(1);
        unsq_len = unsq_len.saturating_sub(1);
    }
    let inq_len = sockopt::ioctl_int(fd, SIOCINQ).map_err(call("SIOCINQ"))? as usize;
    let mss_clamp = sockopt::get_u32(fd, libc::SOL_TCP as u32, libc::TCP_MAXSEG as u32).map_err(call("TCP_MAXSEG"))?;
    let opt_mask = ti.options as u32;
    let (snd_wscale, rcv_wscale) = if opt_mask & k::TCPI_OPT_WSCALE != 0 { ((ti.wscale & 0xf) as u32, (ti.wscale >> 4) as u32) } else { (0, 0) };
    let timestamp = if opt_mask & k::TCPI_OPT_TIMESTAMPS != 0 {
        sockopt::get_u32(fd, libc::SOL_TCP as u32, k::TCP_TIMESTAMP).map_err(call("TCP_TIMESTAMP"))?
    } else {
        0
    };
    let window = match sockopt::get::<[u32; 5]>(fd, libc::SOL_TCP as u32, k::TCP_REPAIR_WINDOW) {
        Ok([snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup]) => Some(Window { snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup }),
        Err(Errno::NOPROTOOPT) => None,
        Err(errno) => return Err(RepairError::Call { call: "TCP_REPAIR_WINDOW", errno }),
    };
    let (inq_seq, inq) = peek_queue(fd, TCP_RECV_QUEUE, inq_len)?;
    let (outq_seq, outq) = peek_queue(fd, TCP_SEND_QUEUE, outq_len)?;
    set_queue(fd, TCP_NO_QUEUE)?;
    Ok(TcpStream { state: st, inq_seq, outq_seq, unsq_len, opt_mask, snd_wscale, rcv_wscale, mss_clamp, timestamp, window, inq, outq })
}

/// Writes `data` into the queue selected with `TCP_REPAIR_QUEUE` (or, with
/// repair off, sends it), in pieces the kernel accepts.
fn fill_queue(fd: impl AsFd, what: &'static str, data: &[u8]) -> Result<(), RepairError> {
    let fd = fd.as_fd();
    let mut chunk = QUEUE_CHUNK;
    let mut off = 0;
    while off < data.len() {
        let end = data.len().min(off + chunk);
        match rustix::net::send(fd, &data[off..end], rustix::net::SendFlags::NOSIGNAL | rustix::net::SendFlags::DONTWAIT) {
            Ok(0) | Err(Errno::NOMEM) | Err(Errno::AGAIN) if chunk > 1024 => chunk /= 2,
            Ok(n) => off += n,
            Err(errno) => return Err(RepairError::Call { call: what, errno }),
        }
    }
    Ok(())
}

impl TcpStream {
    /// The part of the send queue the peer may have seen.
    pub fn sent(&self) -> &[u8] {
        &self.outq[..self.outq.len().saturating_sub(self.unsq_len as usize)]
    }

    /// The tail of the send queue never sent.
    pub fn unsent(&self) -> &[u8] {
        &self.outq[self.outq.len().saturating_sub(self.unsq_len as usize)..]
    }
}

/// What [`go_live`] does to a rebuilt connection, from [`Finish::of`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    /// The dumped state.
    pub state: u32,
    /// Bytes the dumped socket had not sent.
    pub unsent: Vec<u8>,
    /// The dumped socket was shut down for reading (`SHUT_RD` leaves no
    /// trace in the state).
    pub shutdown_read: bool,
    /// A segment from the peer as the rebuilt socket expects the next one
    /// (at `rcv_nxt` before the peer's FIN, acknowledging `snd_una`).
    from_peer: Segment,
    /// `write_seq` before our FIN.
    write_seq: u32,
}

impl Finish {
    /// What is left to do for connection `s` (`local` → `peer`, dumped
    /// with `sk_shutdown` bits `shutdown`) once [`restore`] rebuilt it.
    pub fn of(s: &TcpStream, local: &SocketAddr, peer: &SocketAddr, shutdown: u8) -> Finish {
        let (rcv_nxt, write_seq) = s.data_seqs();
        let window = match s.window {
            Some(w) => (w.snd_wnd >> s.snd_wscale).min(0xffff) as u16,
            None => 0xffff,
        };
        let from_peer = Segment { local: *local, peer: *peer, seq: rcv_nxt, ack: write_seq.wrapping_sub(s.outq.len() as u32), flags: tcp_segment::ACK, window };
        Finish { state: s.state, unsent: s.unsent().to_vec(), shutdown_read: shutdown & 1 != 0, from_peer, write_seq }
    }
}

impl TcpStream {
    /// `rcv_nxt` and `write_seq` without the FINs (what repair mode sets).
    fn data_seqs(&self) -> (u32, u32) {
        (self.inq_seq.wrapping_sub(state::fin_received(self.state) as u32), self.outq_seq.wrapping_sub(state::fin_sent(self.state) as u32))
    }
}

/// Forges `seg` and waits (a hang guard) until the socket left state
/// `from`.
fn forge(fd: BorrowedFd<'_>, seg: &Segment, what: &'static str, from: u32) -> Result<(), RepairError> {
    tcp_segment::inject(seg).map_err(call(what))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let st = tcp_info(fd).map_err(call("TCP_INFO"))?.state as u32;
        if st != from {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(RepairError::Bad(format!("{what}: the socket stayed {}", state::name(st))));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn shut_write(fd: BorrowedFd<'_>) -> Result<(), RepairError> {
    rustix::net::shutdown(fd, rustix::net::Shutdown::Write).map_err(call("shutdown(SHUT_WR)"))
}

/// Rebuilds connection `s` from `local` to `peer` on `fd`: a fresh TCP
/// socket of the right family, in repair mode, with big enough buffers
/// (`SO_SNDBUFFORCE`/`SO_RCVBUFFORCE`, set back by the caller). Leaves it
/// ESTABLISHED in repair mode, with everything but the unsent tail of the
/// send queue and the FINs, which [`go_live`] replays.
pub fn restore(fd: impl AsFd, s: &TcpStream, local: &SocketAddr, peer: &SocketAddr) -> Result<(), RepairError> {
    let fd = fd.as_fd();
    if !state::repairable(s.state) {
        return Err(RepairError::State(s.state));
    }
    if s.unsq_len as usize > s.outq.len() {
        return Err(RepairError::Bad(format!("{} unsent bytes in a send queue of {}", s.unsq_len, s.outq.len())));
    }
    if state::fin_acked(s.state) && s.outq.len() > 0 {
        return Err(RepairError::Bad(format!("{} bytes not acknowledged before an acknowledged FIN", s.outq.len())));
    }
    let (rcv_nxt, write_seq) = s.data_seqs();
    rustix::net::bind(fd, local).map_err(call("bind"))?;
    set_queue(fd, TCP_RECV_QUEUE)?;
    let rcv_start = rcv_nxt.wrapping_sub(s.inq.len() as u32);
    sockopt::set_u32(fd, libc::SOL_TCP as u32, k::TCP_QUEUE_SEQ, rcv_start).map_err(call("TCP_QUEUE_SEQ (receive)"))?;
    set_queue(fd, TCP_SEND_QUEUE)?;
    let snd_start = write_seq.wrapping_sub(s.outq.len() as u32);
    sockopt::set_u32(fd, libc::SOL_TCP as u32, k::TCP_QUEUE_SEQ, snd_start).map_err(call("TCP_QUEUE_SEQ (send)"))?;
    match rustix::net::connect(fd, peer) {
        Ok(()) | Err(Errno::INPROGRESS) => {}
        Err(errno) => return Err(RepairError::Call { call: "connect", errno }),
    }
    let mut opts: Vec<[u32; 2]> = Vec::with_capacity(4);
    if s.opt_mask & k::TCPI_OPT_SACK != 0 {
        opts.push([TCPOPT_SACK_PERM, 0]);
    }
    if s.opt_mask & k::TCPI_OPT_WSCALE != 0 {
        opts.push([TCPOPT_WINDOW, s.snd_wscale | (s.rcv_wscale << 16)]);
    }
    if s.opt_mask & k::TCPI_OPT_TIMESTAMPS != 0 {
        opts.push([TCPOPT_TIMESTAMP, 0]);
    }
    opts.push([TCPOPT_MAXSEG, s.mss_clamp]);
    let bytes: Vec<u8> = opts.iter().flatten().flat_map(|w| w.to_ne_bytes()).collect();
    sockopt::set_bytes(fd, libc::SOL_TCP as u32, k::TCP_REPAIR_OPTIONS, &bytes).map_err(call("TCP_REPAIR_OPTIONS"))?;
    if s.opt_mask & k::TCPI_OPT_TIMESTAMPS != 0 {
        sockopt::set_u32(fd, libc::SOL_TCP as u32, k::TCP_TIMESTAMP, s.timestamp).map_err(call("TCP_TIMESTAMP"))?;
    }
    set_queue(fd, TCP_RECV_QUEUE)?;
    fill_queue(fd, "writing the receive queue", &s.inq)?;
    set_queue(fd, TCP_SEND_QUEUE)?;
    fill_queue(fd, "writing the send queue", s.sent())?;
    if let Some(w) = s.window {
        let mut v = [w.snd_wl1, w.snd_wnd, w.max_window, w.rcv_wnd, w.rcv_wup];
        if state::fin_received(s.state) {
            // The window was saved after the peer's FIN, which is not in
            // yet: rcv_wup may not pass rcv_nxt.
            v[4] = v[4].wrapping_sub(1);
            v[3] = v[3].wrapping_add(1);
        }
        sockopt::set(fd, libc::SOL_TCP as u32, k::TCP_REPAIR_WINDOW, &v).map_err(call("TCP_REPAIR_WINDOW"))?;
    }
    set_queue(fd, TCP_NO_QUEUE)
}

/// Turns repair off on a restored connection, sends what the dumped one
/// had not sent yet and replays the FINs (see the module documentation).
/// Call it once every connection of the restore is rebuilt: the window
/// probe, the bytes and the acknowledgements sent here must find the
/// peer's socket (or a network lock) rather than nothing, which would
/// answer with a reset. The caller then puts `SO_REUSEADDR` and the buffer
/// sizes back.
pub fn go_live(fd: impl AsFd, f: &Finish) -> Result<(), RepairError> {
    let fd = fd.as_fd();
    let fin = Segment { flags: tcp_segment::FIN | tcp_segment::ACK, ..f.from_peer };
    if state::fin_acked(f.state) {
        // Our FIN as sent (send queue selected: not transmitted), then the
        // peer's acknowledgement of it.
        set_queue(fd, TCP_SEND_QUEUE)?;
        shut_write(fd)?;
        set_queue(fd, TCP_NO_QUEUE)?;
        let ack = Segment { ack: f.write_seq.wrapping_add(1), ..f.from_peer };
        forge(fd, &ack, "forging the ACK of our FIN", state::FIN_WAIT1)?;
    }
    repair_off(fd)?;
    fill_queue(fd, "sending the unsent bytes", &f.unsent)?;
    if matches!(f.state, state::CLOSE_WAIT | state::LAST_ACK) {
        forge(fd, &fin, "forging the peer's FIN", state::ESTABLISHED)?;
    }
    if state::fin_sent(f.state) && !state::fin_acked(f.state) {
        shut_write(fd)?;
    }
    if f.state == state::CLOSING {
        forge(fd, &fin, "forging the peer's FIN", state::FIN_WAIT1)?;
    }
    if f.shutdown_read {
        rustix::net::shutdown(fd, rustix::net::Shutdown::Read).map_err(call("shutdown(SHUT_RD)"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::OwnedFd;
    use rustix::net::{AddressFamily, SocketType};
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream as StdTcp};

    fn pair(v6: bool) -> (StdTcp, StdTcp) {
        let l = TcpListener::bind(if v6 { "[::1]:0" } else { "127.0.0.1:0" }).unwrap();
        let a = StdTcp::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    fn fresh(addr: &SocketAddr) -> OwnedFd {
        let fam = if addr.is_ipv4() { AddressFamily::INET } else { AddressFamily::INET6 };
        let s = rustix::net::socket(fam, SocketType::STREAM, None).unwrap();
        repair_on(&s).unwrap();
        s
    }

    /// Both ends in repair mode, saved, with their addresses.
    fn save_pair(a: &StdTcp, b: &StdTcp) -> (TcpStream, TcpStream, SocketAddr, SocketAddr) {
        repair_on(a).unwrap();
        repair_on(b).unwrap();
        (save(a).unwrap(), save(b).unwrap(), a.local_addr().unwrap(), b.local_addr().unwrap())
    }

    /// Both ends rebuilt on fresh sockets, live again.
    fn rebuild(sa: &TcpStream, sb: &TcpStream, la: &SocketAddr, lb: &SocketAddr) -> (OwnedFd, OwnedFd) {
        let (na, nb) = (fresh(la), fresh(lb));
        restore(&na, sa, la, lb).unwrap();
        restore(&nb, sb, lb, la).unwrap();
        go_live(&na, &Finish::of(sa, la, lb, 0)).unwrap();
        go_live(&nb, &Finish::of(sb, lb, la, 0)).unwrap();
        (na, nb)
    }

    /// Saves both ends of a loopback connection with bytes in flight both
    /// ways, drops them silently, rebuilds them on new sockets and checks
    /// every byte arrives once, in order, and the connection carries on.
    fn carry_on(v6: bool) {
        let (mut a, mut b) = pair(v6);
        a.write_all(b"to b, unread").unwrap();
        b.write_all(b"to a, unread").unwrap();
        // Let the bytes reach the other side's receive queue.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while sockopt::ioctl_int(&a, SIOCINQ).unwrap() < 12 || sockopt::ioctl_int(&b, SIOCINQ).unwrap() < 12 {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let (sa, sb, la, lb) = save_pair(&a, &b);
        assert_eq!(sa.inq, b"to a, unread");
        assert_eq!(sb.inq, b"to b, unread");
        assert_eq!(sa.outq, b"", "acked bytes leave the send queue");
        // Saving consumed nothing.
        assert_eq!(sockopt::ioctl_int(&a, SIOCINQ).unwrap(), 12);
        drop((a, b));
        let (na, nb) = rebuild(&sa, &sb, &la, &lb);
        let mut a = StdTcp::from(na);
        let mut b = StdTcp::from(nb);
        a.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        b.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 12];
        a.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"to a, unread");
        b.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"to b, unread");
        a.write_all(b"after").unwrap();
        let mut buf = [0u8; 5];
        b.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"after");
        assert_eq!(a.local_addr().unwrap(), la);
        assert_eq!(a.peer_addr().unwrap(), lb);
    }

    #[test]
    fn loopback_connection_carries_on_v4() {
        carry_on(false);
    }

    #[test]
    fn loopback_connection_carries_on_v6() {
        carry_on(true);
    }

    #[test]
    fn send_queue_bytes_not_acked_are_kept() {
        let (a, b) = pair(false);
        let (la, lb) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        // b in repair mode acknowledges nothing it has not got: put bytes
        // straight into a's send queue as unsent (repair mode, sent part)...
        repair_on(&a).unwrap();
        repair_on(&b).unwrap();
        set_queue(&a, TCP_SEND_QUEUE).unwrap();
        fill_queue(&a, "test", b"never acked").unwrap();
        let sa = save(&a).unwrap();
        let sb = save(&b).unwrap();
        assert_eq!(sa.outq, b"never acked");
        assert_eq!(sb.inq, b"");
        drop((a, b));
        let (_na, nb) = rebuild(&sa, &sb, &la, &lb);
        // Retransmitted after the restore.
        let mut b = StdTcp::from(nb);
        b.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 11];
        b.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"never acked");
    }

    /// A writer that filled the reader's window: bytes unread at the
    /// reader, bytes unacknowledged and never sent at the writer. After
    /// the restore the reader gets the whole stream, once and in order.
    #[test]
    fn full_window_stream_survives() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        rustix::net::sockopt::set_socket_recv_buffer_size(&l, 4096).unwrap();
        let mut a = StdTcp::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        rustix::net::sockopt::set_socket_send_buffer_size(&a, 65536).unwrap();
        a.set_nonblocking(true).unwrap();
        let pattern = |i: usize| (i % 251) as u8;
        let mut total = 0;
        let block: Vec<u8> = (0..4096).map(pattern).collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        // Write until the window is shut and bytes wait unsent: a write
        // refused after a pause with unsent bytes queued.
        let mut refused = false;
        loop {
            assert!(std::time::Instant::now() < deadline);
            let off = total % 251;
            match a.write(&block[off..off + 1024]) {
                Ok(n) => (total, refused) = (total + n, false),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if refused && sockopt::ioctl_int(&a, SIOCOUTQNSD).unwrap() > 0 {
                        break;
                    }
                    refused = true;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("{e}"),
            }
        }
        let (sa, sb, la, lb) = save_pair(&a, &b);
        assert!(sa.unsq_len > 0, "the writer has bytes never sent");
        assert!(!sb.inq.is_empty(), "the reader has bytes unread");
        drop((a, b));
        let (na, nb) = rebuild(&sa, &sb, &la, &lb);
        let _a = StdTcp::from(na);
        let mut b = StdTcp::from(nb);
        b.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
        let mut got = vec![0u8; total];
        b.read_exact(&mut got).unwrap();
        assert!(got.iter().enumerate().all(|(i, &c)| c == pattern(i)), "stream out of order");
    }

    fn wait_state(s: &impl AsFd, want: u32) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while tcp_info(s).unwrap().state as u32 != want {
            assert!(std::time::Instant::now() < deadline, "never {}", state::name(want));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn wait_inq(s: &impl AsFd, n: u32) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while sockopt::ioctl_int(s, SIOCINQ).unwrap() < n {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// b shut down for writing (FIN_WAIT2), a saw it (CLOSE_WAIT), bytes
    /// unread both ways. After the rebuild: both states back, the bytes
    /// read once, EOF where it was (after a's unread bytes), and the open
    /// direction carries on until a closes it too.
    fn half_closed(v6: bool) {
        let (mut a, mut b) = pair(v6);
        b.write_all(b"before the FIN").unwrap();
        b.shutdown(std::net::Shutdown::Write).unwrap();
        a.write_all(b"to b, unread").unwrap();
        wait_state(&a, state::CLOSE_WAIT);
        wait_state(&b, state::FIN_WAIT2);
        wait_inq(&b, 12);
        let (sa, sb, la, lb) = save_pair(&a, &b);
        assert_eq!((sa.state, sb.state), (state::CLOSE_WAIT, state::FIN_WAIT2));
        assert_eq!((&sa.inq[..], &sb.inq[..]), (&b"before the FIN"[..], &b"to b, unread"[..]));
        assert_eq!((sa.outq.len(), sb.outq.len(), sb.unsq_len), (0, 0, 0), "the FIN is no data");
        drop((a, b));
        let (na, nb) = rebuild(&sa, &sb, &la, &lb);
        assert_eq!(tcp_info(&na).unwrap().state as u32, state::CLOSE_WAIT);
        assert_eq!(tcp_info(&nb).unwrap().state as u32, state::FIN_WAIT2);
        let mut a = StdTcp::from(na);
        let mut b = StdTcp::from(nb);
        a.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        b.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        let mut got = Vec::new();
        a.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"before the FIN", "a reads b's bytes, then EOF");
        let mut buf = [0u8; 12];
        b.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"to b, unread");
        a.write_all(b"after").unwrap();
        drop(a);
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"after", "a's close reaches b as EOF");
        assert!(b.write_all(b"x").is_err() || b.write_all(b"x").is_err(), "b stays shut for writing");
    }

    #[test]
    fn half_closed_connection_carries_on_v4() {
        half_closed(false);
    }

    #[test]
    fn half_closed_connection_carries_on_v6() {
        half_closed(true);
    }

    /// FIN_WAIT1 with bytes never sent before the FIN (the reader's window
    /// is shut), and the peer in ESTABLISHED. After the rebuild the reader
    /// gets every byte, then EOF.
    #[test]
    fn fin_after_unsent_bytes_survives() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        rustix::net::sockopt::set_socket_recv_buffer_size(&l, 4096).unwrap();
        let mut a = StdTcp::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        a.set_nonblocking(true).unwrap();
        let block = vec![7u8; 1024];
        let mut total = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while sockopt::ioctl_int(&a, SIOCOUTQNSD).unwrap() == 0 {
            assert!(std::time::Instant::now() < deadline);
            match a.write(&block) {
                Ok(n) => total += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(std::time::Duration::from_millis(20)),
                Err(e) => panic!("{e}"),
            }
        }
        a.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(tcp_info(&a).unwrap().state as u32, state::FIN_WAIT1);
        let (sa, sb, la, lb) = save_pair(&a, &b);
        assert_eq!((sa.state, sb.state), (state::FIN_WAIT1, state::ESTABLISHED));
        assert!(sa.unsq_len > 0);
        // Bytes b got but has not acknowledged yet are in both queues.
        assert!(sa.outq.len() + sb.inq.len() >= total && sa.outq.len() <= total, "the FIN is no data");
        drop((a, b));
        let (na, nb) = rebuild(&sa, &sb, &la, &lb);
        let mut b = StdTcp::from(nb);
        b.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), total);
        wait_state(&na, state::FIN_WAIT2);
    }

    #[test]
    fn other_states_are_refused_by_name() {
        let s = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
        repair_on(&s).unwrap();
        let e = save(&s).unwrap_err();
        assert_eq!(e, RepairError::State(state::CLOSE));
        assert!(e.to_string().contains("CLOSE"), "{e}");
    }

    #[test]
    fn listener_reports_backlog_and_pending() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = StdTcp::connect(l.local_addr().unwrap()).unwrap();
        let ti = tcp_info(&l).unwrap();
        assert_eq!(ti.state as u32, state::LISTEN);
        assert_eq!(ti.sacked, 128, "std listens with a backlog of 128");
        assert_eq!(ti.unacked, 1);
        assert!(repair_on(&l).is_err(), "listeners cannot be repaired");
    }
}
