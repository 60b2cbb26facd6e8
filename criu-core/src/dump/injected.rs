//! State only the task itself can report, obtained by running syscalls in
//! it: sigactions, itimers, POSIX timer values, the program break, prctl
//! values, and per thread the alternate signal stack and the tid address.
//!
//! The calls of each thread are run as one piece of code ([`Calls`]) in a
//! scratch mapping created in the task (by an injected `mmap`), which
//! also holds the data they return through memory; it is removed again
//! before the task's memory is looked at.

use super::model::{ItimerVal, SigAction};
use super::DumpError;
use crate::ptrace::inject::Injector;
use crate::ptrace::remote;

const NR_BRK: i64 = 12;
const NR_MMAP: i64 = 9;
const NR_MUNMAP: i64 = 11;
const NR_MPROTECT: i64 = 10;
const NR_RT_SIGACTION: i64 = 13;
const NR_GETITIMER: i64 = 36;
const NR_SIGALTSTACK: i64 = 131;
const NR_PRCTL: i64 = 157;
const NR_TIMER_GETTIME: i64 = 224;
const NR_TIMER_GETOVERRUN: i64 = 225;
const NR_MEMBARRIER: i64 = 324;
/// `MEMBARRIER_CMD_GET_REGISTRATIONS` (Linux 6.3).
const MEMBARRIER_CMD_GET_REGISTRATIONS: u64 = 1 << 9;

const PR_GET_PDEATHSIG: u64 = 2;
const PR_GET_DUMPABLE: u64 = 3;
const PR_GET_SECUREBITS: u64 = 27;
const PR_GET_CHILD_SUBREAPER: u64 = 37;
const PR_GET_TID_ADDRESS: u64 = 40;
const PR_GET_THP_DISABLE: u64 = 42;

/// The queries of one thread, run as one piece of injected code: each
/// call's arguments loaded, `syscall`, its result stored in the scratch
/// area; `int3` at the end. One ptrace stop per thread instead of one per
/// call (a task's queries are some 80 calls, 64 of them `rt_sigaction`).
///
/// Scratch area of a task (one anonymous mapping, all threads' stubs):
///
/// ```text
///   addr                 addr + code_len              addr + code_len + data_len
///   | stubs (r-x)         | each stub's data (rw-): buffers, then results |
/// ```
///
/// The code pages are written through `/proc/PID/mem` (the mapping is
/// never writable and executable at once). Where the task refuses an
/// executable mapping, the same calls run one by one ([`Injector::syscall`]).
#[derive(Debug, Default)]
pub struct Calls {
    list: Vec<Call>,
    /// Bytes of buffers the calls write into.
    buf_len: u64,
}

#[derive(Debug, Clone, Copy)]
struct Call {
    nr: i64,
    args: [u64; 6],
    /// Bit i: argument i is an offset into this stub's data, made an
    /// address once the scratch area is mapped.
    rebase: u8,
}

/// An argument: a value, or a buffer of the stub's data (by offset).
#[derive(Debug, Clone, Copy)]
pub enum Arg {
    Val(u64),
    Buf(u64),
}

/// Bytes of code per call: seven `movabs` of 10 bytes, `syscall`, one
/// 10-byte `movabs` store.
const CALL_CODE: u64 = 7 * 10 + 2 + 10;

impl Calls {
    /// A buffer of `len` bytes (8-aligned); returns its offset.
    pub fn buf(&mut self, len: u64) -> u64 {
        let off = self.buf_len;
        self.buf_len += len.next_multiple_of(8);
        off
    }

    /// Adds call `nr(args)`; returns its index.
    pub fn call(&mut self, nr: i64, args: &[Arg]) -> usize {
        let mut c = Call { nr, args: [0; 6], rebase: 0 };
        for (i, a) in args.iter().take(6).enumerate() {
            c.args[i] = match *a {
                Arg::Val(v) => v,
                Arg::Buf(off) => {
                    c.rebase |= 1 << i;
                    off
                }
            };
        }
        self.list.push(c);
        self.list.len() - 1
    }

    fn code_len(&self) -> u64 {
        self.list.len() as u64 * CALL_CODE + 1
    }

    /// Buffers, then one result word per call.
    fn data_len(&self) -> u64 {
        self.buf_len + 8 * self.list.len() as u64
    }

    fn args_at(&self, c: &Call, data: u64) -> [u64; 6] {
        let mut a = c.args;
        for (i, v) in a.iter_mut().enumerate() {
            if c.rebase & (1 << i) != 0 {
                *v += data;
            }
        }
        a
    }

    /// The stub's machine code (position-independent), its data at `data`.
    fn code(&self, data: u64) -> Vec<u8> {
        // movabs REG, imm64 for rax, rdi, rsi, rdx, r10, r8, r9.
        const LOAD: [[u8; 2]; 7] = [[0x48, 0xb8], [0x48, 0xbf], [0x48, 0xbe], [0x48, 0xba], [0x49, 0xba], [0x49, 0xb8], [0x49, 0xb9]];
        let mut out = Vec::with_capacity(self.code_len() as usize);
        for (i, c) in self.list.iter().enumerate() {
            let vals = std::iter::once(c.nr as u64).chain(self.args_at(c, data));
            for (op, v) in LOAD.iter().zip(vals) {
                out.extend_from_slice(op);
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&crate::ptrace::inject::SYSCALL_INSN);
            // movabs [result], rax
            out.extend_from_slice(&[0x48, 0xa3]);
            out.extend_from_slice(&(data + self.buf_len + 8 * i as u64).to_le_bytes());
        }
        out.push(0xcc); // int3
        out
    }
}

/// What a stub left: each call's raw result and its buffers.
#[derive(Debug)]
pub struct Results {
    tid: i32,
    ret: Vec<i64>,
    data: Vec<u8>,
}

impl Results {
    /// Call `i`'s raw result (negative errno on failure).
    pub fn raw(&self, i: usize) -> i64 {
        self.ret[i]
    }

    /// Call `i`'s result, an error if it failed (as [`Injector::syscall_ok`]).
    pub fn ok(&self, i: usize) -> Result<u64, DumpError> {
        match self.ret[i] {
            r if (-4095..0).contains(&r) => {
                let errno = nix::errno::Errno::from_raw(-r as i32);
                Err(crate::ptrace::PtraceError::Sys { op: "injected syscall", tid: self.tid, errno }.into())
            }
            r => Ok(r as u64),
        }
    }

    /// `N` words of the buffer at `off`.
    pub fn u64s<const N: usize>(&self, off: u64) -> [u64; N] {
        let mut out = [0u64; N];
        for (i, w) in out.iter_mut().enumerate() {
            let at = off as usize + 8 * i;
            *w = self.data.get(at..at + 8).map_or(0, |b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])));
        }
        out
    }

    /// The 32-bit value at `off`.
    pub fn u32_at(&self, off: u64) -> u32 {
        (self.u64s::<1>(off)[0] & 0xffff_ffff) as u32
    }
}

/// A scratch area mapped in the task for the stubs given to
/// [`map_scratch`] (one per thread, in order); unmap it with
/// [`Scratch::unmap`].
#[derive(Debug, Clone)]
pub struct Scratch {
    /// Its address in the task.
    pub addr: u64,
    len: u64,
    /// Each stub's (code, data) addresses; no code where the task could
    /// not map code (calls then run one by one).
    places: Vec<(Option<u64>, u64)>,
}

const PAGE: u64 = 4096;

/// Maps the scratch area for `stubs` in the task (`mmap` r-x, then its
/// data part made rw- with `mprotect`, and the code written); where the
/// task refuses code (an executable anonymous mapping, or a write to it),
/// a data-only area (also without `code`).
pub fn map_scratch(inj: &mut Injector, pid: i32, stubs: &[&Calls], code: bool) -> Result<Scratch, DumpError> {
    let code_len = stubs.iter().map(|c| c.code_len()).sum::<u64>().next_multiple_of(PAGE);
    let data_len = stubs.iter().map(|c| c.data_len()).sum::<u64>().max(8).next_multiple_of(PAGE);
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    let (rx, rw) = ((libc::PROT_READ | libc::PROT_EXEC) as u64, (libc::PROT_READ | libc::PROT_WRITE) as u64);
    let data_only = |inj: &mut Injector| -> Result<Scratch, DumpError> {
        let addr = inj.syscall_ok(NR_MMAP, &[0, data_len, rw, flags, u64::MAX, 0])?;
        Ok(Scratch { addr, len: data_len, places: place(stubs, None, addr) })
    };
    let len = code_len + data_len;
    let mapped = if code { inj.syscall(NR_MMAP, &[0, len, rx, flags, u64::MAX, 0])? } else { -(libc::EPERM as i64) };
    if (-4095..0).contains(&mapped) {
        tracing::debug!(pid, errno = -mapped, "no executable scratch area: injected calls run one by one");
        return data_only(inj);
    }
    let addr = mapped as u64;
    let s = Scratch { addr, len, places: place(stubs, Some(addr), addr + code_len) };
    let with_code = inj.syscall_ok(NR_MPROTECT, &[addr + code_len, data_len, rw]).map_err(DumpError::from).and_then(|_| {
        let mut bytes = Vec::with_capacity(code_len as usize);
        for (c, (_, data)) in stubs.iter().zip(&s.places) {
            bytes.extend(c.code(*data));
        }
        remote::write_forced(pid, addr, &bytes).map_err(|errno| DumpError::Memory { addr, errno })
    });
    if let Err(e) = with_code {
        tracing::debug!(pid, "injected code cannot be written ({e}): injected calls run one by one");
        s.unmap(inj)?;
        return data_only(inj);
    }
    Ok(s)
}

/// Each stub's (code, data) address: code from `code`, data from `data`.
fn place(stubs: &[&Calls], code: Option<u64>, data: u64) -> Vec<(Option<u64>, u64)> {
    let (mut c, mut d) = (code, data);
    let mut out = Vec::with_capacity(stubs.len());
    for s in stubs {
        out.push((c, d));
        c = c.map(|a| a + s.code_len());
        d += s.data_len();
    }
    out
}

impl Scratch {
    /// Unmaps the area.
    pub fn unmap(&self, inj: &mut Injector) -> Result<(), DumpError> {
        inj.syscall_ok(NR_MUNMAP, &[self.addr, self.len])?;
        Ok(())
    }

    /// Runs stub `k` (`calls`, as given to [`map_scratch`]) in `inj`'s
    /// thread of process `pid` and reads what it left.
    pub fn run(&self, inj: &mut Injector, pid: i32, k: usize, calls: &Calls) -> Result<Results, DumpError> {
        let (code, data) = self.places[k];
        let mut ret = Vec::with_capacity(calls.list.len());
        match code {
            Some(entry) => inj.run_code(entry, entry + calls.code_len())?,
            None => {
                for c in &calls.list {
                    ret.push(inj.syscall(c.nr, &calls.args_at(c, data))?);
                }
            }
        }
        let mut bytes = vec![0u8; calls.data_len() as usize];
        remote::read_exact(pid, data, &mut bytes).map_err(|errno| DumpError::Memory { addr: data, errno })?;
        if code.is_some() {
            let words = bytes[calls.buf_len as usize..].chunks_exact(8);
            ret.extend(words.map(|w| i64::from_ne_bytes(w.try_into().unwrap_or([0; 8]))));
        }
        bytes.truncate(calls.buf_len as usize);
        Ok(Results { tid: inj.tid(), ret, data: bytes })
    }
}

/// Process-wide values read by injection.
#[derive(Debug, Clone, Default)]
pub struct ProcessValues {
    /// Actions of signals 1..=64.
    pub sigactions: Vec<SigAction>,
    /// The three itimers.
    pub itimers: [ItimerVal; 3],
    /// Current program break.
    pub brk: u64,
    /// `PR_GET_DUMPABLE`.
    pub dumpable: u32,
    /// `PR_GET_PDEATHSIG`.
    pub pdeath_sig: u32,
    /// `PR_GET_CHILD_SUBREAPER`.
    pub child_subreaper: bool,
    /// `PR_GET_THP_DISABLE`.
    pub thp_disabled: bool,
    /// Per POSIX timer id asked, in order.
    pub timers: Vec<TimerValue>,
    /// `MEMBARRIER_CMD_GET_REGISTRATIONS`: the registered commands.
    pub membarrier_mask: u32,
}

/// A POSIX timer's state as `timer_gettime` + `timer_getoverrun` report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimerValue {
    /// Overrun count.
    pub overrun: i32,
    /// Interval (sec, nsec).
    pub interval: (u64, u64),
    /// Remaining time (sec, nsec).
    pub value: (u64, u64),
}

/// Where the process-wide queries leave their answers.
#[derive(Debug)]
pub struct ProcessQuery {
    pub calls: Calls,
    /// Per signal 1..=64: (call, buffer); none for SIGKILL and SIGSTOP.
    sigactions: Vec<Option<(usize, u64)>>,
    itimers: [(usize, u64); 3],
    /// Per timer: (timer_gettime call, buffer, timer_getoverrun call).
    timers: Vec<(usize, u64, usize)>,
    brk: usize,
    membarrier: usize,
    dumpable: usize,
    thp: usize,
    pdeath: (usize, u64),
    subreaper: (usize, u64),
}

/// The process-wide queries (run in the leader): sigactions, itimers,
/// the POSIX timers `timer_ids`, brk, membarrier registrations, prctl
/// values.
pub fn process_query(timer_ids: &[i32]) -> ProcessQuery {
    use Arg::{Buf, Val};
    let mut c = Calls::default();
    let sigactions = (1..=64u64)
        .map(|sig| {
            if sig == libc::SIGKILL as u64 || sig == libc::SIGSTOP as u64 {
                return None;
            }
            let b = c.buf(32);
            Some((c.call(NR_RT_SIGACTION, &[Val(sig), Val(0), Buf(b), Val(8)]), b))
        })
        .collect();
    let itimers = [0u64, 1, 2].map(|which| {
        let b = c.buf(32);
        (c.call(NR_GETITIMER, &[Val(which), Buf(b)]), b)
    });
    let timers = timer_ids
        .iter()
        .map(|&id| {
            let b = c.buf(32);
            let get = c.call(NR_TIMER_GETTIME, &[Val(id as u64), Buf(b)]);
            (get, b, c.call(NR_TIMER_GETOVERRUN, &[Val(id as u64)]))
        })
        .collect();
    let brk = c.call(NR_BRK, &[Val(0)]);
    let membarrier = c.call(NR_MEMBARRIER, &[Val(MEMBARRIER_CMD_GET_REGISTRATIONS), Val(0), Val(0)]);
    let dumpable = c.call(NR_PRCTL, &[Val(PR_GET_DUMPABLE)]);
    let thp = c.call(NR_PRCTL, &[Val(PR_GET_THP_DISABLE), Val(0), Val(0), Val(0), Val(0)]);
    let b = c.buf(8);
    let pdeath = (c.call(NR_PRCTL, &[Val(PR_GET_PDEATHSIG), Buf(b)]), b);
    let b = c.buf(8);
    let subreaper = (c.call(NR_PRCTL, &[Val(PR_GET_CHILD_SUBREAPER), Buf(b)]), b);
    ProcessQuery { calls: c, sigactions, itimers, timers, brk, membarrier, dumpable, thp, pdeath, subreaper }
}

impl ProcessQuery {
    /// The values from the stub's results (the first failed call, in
    /// order, is the error).
    pub fn values(&self, pid: i32, r: &Results) -> Result<ProcessValues, DumpError> {
        let mut v = ProcessValues::default();
        for s in &self.sigactions {
            v.sigactions.push(match *s {
                None => SigAction::default(),
                Some((i, b)) => {
                    r.ok(i)?;
                    let [handler, flags, restorer, mask] = r.u64s::<4>(b);
                    SigAction { handler, flags, restorer, mask }
                }
            });
        }
        for (k, &(i, b)) in self.itimers.iter().enumerate() {
            r.ok(i)?;
            let [isec, iusec, vsec, vusec] = r.u64s::<4>(b);
            v.itimers[k] = ItimerVal { isec, iusec, vsec, vusec };
        }
        for &(get, b, over) in &self.timers {
            r.ok(get)?;
            let [is, ins, vs, vns] = r.u64s::<4>(b);
            let overrun = r.ok(over)? as i32;
            v.timers.push(TimerValue { overrun, interval: (is, ins), value: (vs, vns) });
        }
        v.brk = r.ok(self.brk)?;
        v.membarrier_mask = match r.raw(self.membarrier) {
            m if m >= 0 => m as u32,
            m => {
                // Before Linux 6.3 the registrations cannot be read.
                tracing::warn!(pid, errno = -m, "membarrier registrations unknown (MEMBARRIER_CMD_GET_REGISTRATIONS refused)");
                0
            }
        };
        v.dumpable = r.ok(self.dumpable)? as u32;
        v.thp_disabled = match r.ok(self.thp)? {
            0 => false,
            1 => true,
            // Bit 1: PR_THP_DISABLE_EXCEPT_ADVISED (6.18), which CRIU's
            // thp_disabled flag cannot say.
            other => {
                let what = format!("PR_SET_THP_DISABLE mode {other:#x} (PR_THP_DISABLE_EXCEPT_ADVISED)");
                return Err(DumpError::Unsupported { pid, what });
            }
        };
        r.ok(self.pdeath.0)?;
        v.pdeath_sig = r.u32_at(self.pdeath.1);
        r.ok(self.subreaper.0)?;
        v.child_subreaper = r.u32_at(self.subreaper.1) != 0;
        Ok(v)
    }
}

/// Per-thread values read by injection.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadValues {
    /// (sp, flags, size) of the alternate signal stack.
    pub altstack: (u64, i32, u64),
    /// `PR_GET_TID_ADDRESS`.
    pub clear_tid_addr: u64,
    /// `PR_GET_SECUREBITS` (credentials are per thread).
    pub secbits: u32,
    /// `PR_GET_PDEATHSIG` (per thread too).
    pub pdeath_sig: u32,
}

/// Where one thread's queries leave their answers.
#[derive(Debug)]
pub struct ThreadQuery {
    pub calls: Calls,
    altstack: (usize, u64),
    tid_address: (usize, u64),
    secbits: usize,
    pdeath: (usize, u64),
}

/// One thread's queries: alternate signal stack, tid address, securebits,
/// parent-death signal.
pub fn thread_query() -> ThreadQuery {
    use Arg::{Buf, Val};
    let mut c = Calls::default();
    let b = c.buf(24);
    let altstack = (c.call(NR_SIGALTSTACK, &[Val(0), Buf(b)]), b);
    let b = c.buf(8);
    let tid_address = (c.call(NR_PRCTL, &[Val(PR_GET_TID_ADDRESS), Buf(b)]), b);
    let secbits = c.call(NR_PRCTL, &[Val(PR_GET_SECUREBITS)]);
    let b = c.buf(8);
    let pdeath = (c.call(NR_PRCTL, &[Val(PR_GET_PDEATHSIG), Buf(b)]), b);
    ThreadQuery { calls: c, altstack, tid_address, secbits, pdeath }
}

impl ThreadQuery {
    /// The values from the stub's results.
    pub fn values(&self, r: &Results) -> Result<ThreadValues, DumpError> {
        r.ok(self.altstack.0)?;
        let [sp, flags, size] = r.u64s::<3>(self.altstack.1);
        r.ok(self.tid_address.0)?;
        let [tid_addr] = r.u64s::<1>(self.tid_address.1);
        let secbits = r.ok(self.secbits)? as u32;
        r.ok(self.pdeath.0)?;
        Ok(ThreadValues { altstack: (sp, flags as i32, size), clear_tid_addr: tid_addr, secbits, pdeath_sig: r.u32_at(self.pdeath.1) })
    }
}
