//! A thread caught inside an rseq critical section.
//!
//! The kernel lets a thread registered with rseq run a critical section
//! (`struct rseq_cs`: `start_ip`, `post_commit_offset`, `abort_ip`, named
//! by the `rseq_cs` pointer in the thread's `struct rseq`) only if nothing
//! stops it there: when the thread is preempted, signalled or migrated in
//! the section, the kernel sends it to `abort_ip` on its way back to user
//! space and clears `rseq_cs`. A dump stops the thread and, by running
//! calls in it, makes it return to user space elsewhere, so the kernel
//! clears `rseq_cs` without moving it: resumed in the section (restored or
//! let go), it would commit unprotected.
//!
//! So, as CRIU does, the section is read before anything runs in the
//! thread (through memory, not by injecting), and a thread inside one is
//! dumped (and left running, with `--leave-running` or after a failed
//! dump) at the abort handler, as the kernel would have sent it there;
//! a system call it was in is not restarted. Sections flagged
//! `RSEQ_CS_FLAG_NO_RESTART_ON_SIGNAL` (deprecated by the kernel) cannot be
//! kept and are refused by name.

use super::DumpError;
use crate::ptrace::raw::RseqConfig;
use crate::ptrace::regs::GpRegs;
use crate::ptrace::remote;

/// `RSEQ_CS_FLAG_NO_RESTART_ON_SIGNAL`.
const NO_RESTART_ON_SIGNAL: u32 = 1 << 1;
/// Kernel restart codes a thread stopped in a system call reports in rax.
const RESTART_CODES: [i64; 4] = [512, 513, 514, 516];
/// `EINTR`.
const EINTR: i64 = 4;

/// The kernel's `struct rseq_cs`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RseqCs {
    pub version: u32,
    pub flags: u32,
    pub start_ip: u64,
    pub post_commit_offset: u64,
    pub abort_ip: u64,
}

impl RseqCs {
    /// Parses the 32 bytes of a `struct rseq_cs`.
    pub fn parse(b: &[u8; 32]) -> RseqCs {
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
        RseqCs { version: u32_at(0), flags: u32_at(4), start_ip: u64_at(8), post_commit_offset: u64_at(16), abort_ip: u64_at(24) }
    }

    /// Whether `ip` lies in the section.
    pub fn contains(&self, ip: u64) -> bool {
        ip >= self.start_ip && ip - self.start_ip < self.post_commit_offset
    }
}

/// Where thread `tid` (of `pid`, registered as `conf`) must resume if it is
/// stopped inside a critical section at `ip`: its abort handler.
pub fn abort_target(pid: i32, tid: i32, conf: &RseqConfig, ip: u64) -> Result<Option<u64>, DumpError> {
    if conf.rseq_abi_pointer == 0 {
        return Ok(None);
    }
    let read = |addr: u64, buf: &mut [u8]| remote::read_exact(pid, addr, buf).map_err(|errno| DumpError::Memory { addr, errno });
    // struct rseq: cpu_id_start, cpu_id (u32 each), rseq_cs (u64), flags (u32).
    let mut head = [0u8; 20];
    read(conf.rseq_abi_pointer, &mut head)?;
    let cs_ptr = u64::from_le_bytes(head[8..16].try_into().unwrap_or([0; 8]));
    let rseq_flags = u32::from_le_bytes(head[16..20].try_into().unwrap_or([0; 4]));
    if cs_ptr == 0 {
        return Ok(None);
    }
    let mut raw = [0u8; 32];
    read(cs_ptr, &mut raw)?;
    let cs = RseqCs::parse(&raw);
    if !cs.contains(ip) {
        return Ok(None);
    }
    if cs.version != 0 {
        return Err(DumpError::Rseq { tid, what: format!("critical section of version {} (only 0 exists)", cs.version) });
    }
    if (cs.flags | rseq_flags) & NO_RESTART_ON_SIGNAL != 0 {
        return Err(DumpError::Rseq { tid, what: "inside a critical section flagged RSEQ_CS_FLAG_NO_RESTART_ON_SIGNAL".into() });
    }
    Ok(Some(cs.abort_ip))
}

/// Registers of a thread sent to its abort handler at `abort_ip`: a system
/// call it was in is over (interrupted, not restarted), as after a signal.
pub fn abort_regs(regs: &mut GpRegs, abort_ip: u64) {
    regs.rip = abort_ip;
    if (regs.orig_rax as i64) >= 0 {
        if RESTART_CODES.contains(&-(regs.rax as i64)) {
            regs.rax = (-EINTR) as u64;
        }
        regs.orig_rax = u64::MAX;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_and_aborts() {
        let mut raw = [0u8; 32];
        raw[8..16].copy_from_slice(&0x1000u64.to_le_bytes());
        raw[16..24].copy_from_slice(&0x20u64.to_le_bytes());
        raw[24..32].copy_from_slice(&0x5000u64.to_le_bytes());
        let cs = RseqCs::parse(&raw);
        assert_eq!((cs.start_ip, cs.post_commit_offset, cs.abort_ip), (0x1000, 0x20, 0x5000));
        assert!(cs.contains(0x1000) && cs.contains(0x101f));
        assert!(!cs.contains(0x1020) && !cs.contains(0xfff));

        // SAFETY: user_regs_struct is plain integers; all-zero is valid.
        let mut r: GpRegs = unsafe { std::mem::zeroed() };
        r.rip = 0x1010;
        r.orig_rax = 0; // read
        r.rax = (-512i64) as u64; // ERESTARTSYS
        abort_regs(&mut r, 0x5000);
        assert_eq!((r.rip, r.rax as i64, r.orig_rax), (0x5000, -4, u64::MAX));
        r.rax = 7;
        r.orig_rax = u64::MAX;
        abort_regs(&mut r, 0x6000);
        assert_eq!((r.rip, r.rax), (0x6000, 7));
    }
}
