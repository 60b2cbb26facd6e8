//! Hand-written ptrace requests that nix does not wrap: register sets,
//! signal masks, queued siginfo and the rseq configuration.

use nix::errno::Errno;

/// `NT_PRSTATUS`: general purpose registers.
pub const NT_PRSTATUS: u32 = 1;
/// `NT_PRFPREG`: the legacy 512-byte FXSAVE area.
pub const NT_PRFPREG: u32 = 2;
/// `NT_X86_XSTATE`: the full XSAVE area (standard, uncompacted format).
pub const NT_X86_XSTATE: u32 = 0x202;

const PTRACE_GETREGSET: libc::c_uint = 0x4204;
const PTRACE_SETREGSET: libc::c_uint = 0x4205;
const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
/// `PTRACE_PEEKSIGINFO_SHARED`: read the process-wide queue.
pub const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;

/// Size of one `siginfo_t`.
pub const SIGINFO_SIZE: usize = 128;

fn check(r: libc::c_long) -> Result<libc::c_long, Errno> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

/// `ptrace(PTRACE_GETREGSET, tid, nt, &iov)`: fills `buf` with a register set
/// and returns how many bytes the kernel wrote.
pub fn ptrace_getregset(tid: i32, nt: u32, buf: &mut [u8]) -> Result<usize, Errno> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: iov describes `buf`, which is writable for its whole length;
    // the kernel writes at most iov_len bytes and updates iov_len.
    check(unsafe { libc::ptrace(PTRACE_GETREGSET, tid, nt as libc::c_ulong, &mut iov as *mut libc::iovec) })?;
    Ok(iov.iov_len)
}

/// `ptrace(PTRACE_SETREGSET, tid, nt, &iov)`: loads a register set from `buf`.
pub fn ptrace_setregset(tid: i32, nt: u32, buf: &[u8]) -> Result<(), Errno> {
    let mut iov = libc::iovec { iov_base: buf.as_ptr() as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: iov describes `buf`; SETREGSET only reads from it.
    check(unsafe { libc::ptrace(PTRACE_SETREGSET, tid, nt as libc::c_ulong, &mut iov as *mut libc::iovec) })?;
    Ok(())
}

/// `ptrace(PTRACE_GETSIGMASK, tid, 8, &mask)`: the thread's blocked signals.
pub fn ptrace_getsigmask(tid: i32) -> Result<u64, Errno> {
    let mut mask = 0u64;
    // SAFETY: the kernel writes exactly 8 bytes (the size we pass) to `mask`.
    check(unsafe { libc::ptrace(PTRACE_GETSIGMASK, tid, 8usize, &mut mask as *mut u64) })?;
    Ok(mask)
}

/// `ptrace(PTRACE_SETSIGMASK, tid, 8, &mask)`: sets the thread's blocked signals.
pub fn ptrace_setsigmask(tid: i32, mask: u64) -> Result<(), Errno> {
    // SAFETY: the kernel reads exactly 8 bytes from `mask`.
    check(unsafe { libc::ptrace(PTRACE_SETSIGMASK, tid, 8usize, &mask as *const u64) })?;
    Ok(())
}

#[repr(C)]
struct PeekSiginfoArgs {
    off: u64,
    flags: u32,
    nr: i32,
}

/// `ptrace(PTRACE_PEEKSIGINFO, tid, &args, buf)`: copies queued signals
/// without dequeuing them; `shared` selects the process-wide queue.
/// Returns every queued `siginfo_t` as 128 raw bytes.
pub fn ptrace_peeksiginfo(tid: i32, shared: bool) -> Result<Vec<[u8; SIGINFO_SIZE]>, Errno> {
    const BATCH: usize = 32;
    let mut out = Vec::new();
    loop {
        let mut buf = [[0u8; SIGINFO_SIZE]; BATCH];
        let args = PeekSiginfoArgs {
            off: out.len() as u64,
            flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
            nr: BATCH as i32,
        };
        // SAFETY: `buf` has room for `nr` siginfo records; args is a valid
        // ptrace_peeksiginfo_args the kernel only reads.
        let n = check(unsafe { libc::ptrace(PTRACE_PEEKSIGINFO, tid, &args as *const PeekSiginfoArgs, buf.as_mut_ptr()) })?
            as usize;
        out.extend_from_slice(&buf[..n.min(BATCH)]);
        if n < BATCH {
            return Ok(out);
        }
    }
}

/// The rseq registration of a thread (`struct ptrace_rseq_configuration`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RseqConfig {
    /// Address of the registered `struct rseq` (0 when none).
    pub rseq_abi_pointer: u64,
    /// Registered size.
    pub rseq_abi_size: u32,
    /// Abort signature.
    pub signature: u32,
    /// Registration flags.
    pub flags: u32,
    /// Padding.
    pub pad: u32,
}

/// `ptrace(PTRACE_GET_RSEQ_CONFIGURATION, tid, sizeof, &conf)`.
pub fn ptrace_get_rseq_configuration(tid: i32) -> Result<RseqConfig, Errno> {
    let mut c = RseqConfig::default();
    // SAFETY: the kernel writes at most the size we pass into `c`.
    check(unsafe {
        libc::ptrace(PTRACE_GET_RSEQ_CONFIGURATION, tid, std::mem::size_of::<RseqConfig>(), &mut c as *mut RseqConfig)
    })?;
    Ok(c)
}

const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
const PTRACE_SECCOMP_GET_METADATA: libc::c_uint = 0x420d;
/// `BPF_MAXINSNS`: the longest classic BPF program.
pub const BPF_MAXINSNS: usize = 4096;
/// Size of one `struct sock_filter` instruction.
pub const SOCK_FILTER_SIZE: usize = 8;

/// `ptrace(PTRACE_SECCOMP_GET_FILTER, tid, index, buf)`: the classic BPF
/// program of the thread's seccomp filter number `index` (0 is the oldest,
/// installed first), as raw `struct sock_filter` instructions. `ENOENT`
/// past the last one, `EMEDIUMTYPE` if the filter is not classic BPF.
pub fn ptrace_seccomp_get_filter(tid: i32, index: u64) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; BPF_MAXINSNS * SOCK_FILTER_SIZE];
    // SAFETY: the kernel writes at most BPF_MAXINSNS instructions (the
    // longest program it accepts) into `buf`, which holds that many.
    let n = check(unsafe { libc::ptrace(PTRACE_SECCOMP_GET_FILTER, tid, index as libc::c_ulong, buf.as_mut_ptr()) })?;
    buf.truncate(n as usize * SOCK_FILTER_SIZE);
    Ok(buf)
}

/// `ptrace(PTRACE_SECCOMP_GET_METADATA, tid, 16, &meta)`: the
/// `SECCOMP_FILTER_FLAG_*` flags the kernel remembers for filter `index`
/// (only `SECCOMP_FILTER_FLAG_LOG`).
pub fn ptrace_seccomp_get_metadata(tid: i32, index: u64) -> Result<u64, Errno> {
    // struct seccomp_metadata { __u64 filter_off; __u64 flags; }
    let mut meta = [index, 0u64];
    // SAFETY: the kernel reads `filter_off` and writes the 16-byte struct,
    // whose size we pass.
    check(unsafe { libc::ptrace(PTRACE_SECCOMP_GET_METADATA, tid, 16usize, meta.as_mut_ptr()) })?;
    Ok(meta[1])
}
