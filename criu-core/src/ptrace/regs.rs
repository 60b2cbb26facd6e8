//! Register state of a stopped thread: the general registers (with fs/gs
//! base) and the XSAVE area (x87, SSE, AVX and every later extension).

use super::raw::{ptrace_getregset, ptrace_setregset, NT_PRFPREG, NT_PRSTATUS, NT_X86_XSTATE};
use super::{sys, Result};

/// The general registers as the kernel's `user_regs_struct` lays them out.
pub type GpRegs = libc::user_regs_struct;

/// Reads the general registers (`NT_PRSTATUS`).
pub fn get_gpregs(tid: i32) -> Result<GpRegs> {
    // SAFETY: user_regs_struct is plain integers; all-zero is valid.
    let mut regs: GpRegs = unsafe { std::mem::zeroed() };
    // SAFETY: viewing the struct as bytes for the kernel to fill; every byte
    // pattern is a valid user_regs_struct.
    let buf = unsafe {
        std::slice::from_raw_parts_mut((&mut regs as *mut GpRegs).cast::<u8>(), std::mem::size_of::<GpRegs>())
    };
    ptrace_getregset(tid, NT_PRSTATUS, buf).map_err(sys("PTRACE_GETREGSET(NT_PRSTATUS)", tid))?;
    Ok(regs)
}

/// Loads the general registers (`NT_PRSTATUS`).
pub fn set_gpregs(tid: i32, regs: &GpRegs) -> Result<()> {
    // SAFETY: reading the plain-integer struct as bytes.
    let buf = unsafe { std::slice::from_raw_parts((regs as *const GpRegs).cast::<u8>(), std::mem::size_of::<GpRegs>()) };
    ptrace_setregset(tid, NT_PRSTATUS, buf).map_err(sys("PTRACE_SETREGSET(NT_PRSTATUS)", tid))
}

/// Which register set an [`FpState`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FpKind {
    /// `NT_X86_XSTATE`: XSAVE standard format (legacy area, header, extended components).
    Xsave,
    /// `NT_PRFPREG`: only the 512-byte FXSAVE area.
    Fxsave,
}

/// The floating point / vector state of a thread, as raw kernel bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FpState {
    /// Layout of `bytes`.
    pub kind: FpKind,
    /// The area; its first 512 bytes are always the FXSAVE layout.
    pub bytes: Vec<u8>,
}

/// Largest XSAVE area we ask for (AMX needs ~11 KiB).
const XSAVE_MAX: usize = 16384;

/// Reads the XSAVE area (`NT_X86_XSTATE`), or the FXSAVE area where XSAVE
/// is not available.
pub fn get_fpstate(tid: i32) -> Result<FpState> {
    let mut buf = vec![0u8; XSAVE_MAX];
    match ptrace_getregset(tid, NT_X86_XSTATE, &mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Ok(FpState { kind: FpKind::Xsave, bytes: buf })
        }
        Err(nix::errno::Errno::ENODEV | nix::errno::Errno::EINVAL) => {
            let n = ptrace_getregset(tid, NT_PRFPREG, &mut buf[..512]).map_err(sys("PTRACE_GETREGSET(NT_PRFPREG)", tid))?;
            buf.truncate(n);
            Ok(FpState { kind: FpKind::Fxsave, bytes: buf })
        }
        Err(e) => Err(sys("PTRACE_GETREGSET(NT_X86_XSTATE)", tid)(e)),
    }
}

/// Loads an area read by [`get_fpstate`].
pub fn set_fpstate(tid: i32, st: &FpState) -> Result<()> {
    let nt = match st.kind {
        FpKind::Xsave => NT_X86_XSTATE,
        FpKind::Fxsave => NT_PRFPREG,
    };
    ptrace_setregset(tid, nt, &st.bytes).map_err(sys("PTRACE_SETREGSET(fp)", tid))
}

/// Offset and size of XSAVE component `i` in the standard format
/// (CPUID leaf 0xD, sub-leaf i: EBX offset, EAX size); None if unsupported.
/// Read once per process: CPUID traps to the hypervisor in a VM, and a
/// restore asks for every component of every thread of every task.
pub fn xsave_component(i: u32) -> Option<(usize, usize)> {
    static TABLE: std::sync::OnceLock<[Option<(usize, usize)>; 64]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        std::array::from_fn(|i| {
            if i < 2 {
                return None;
            }
            // CPUID leaf 0xD is architecturally defined and harmless for unsupported sub-leaves.
            let r = std::arch::x86_64::__cpuid_count(0xd, i as u32);
            (r.eax != 0).then_some((r.ebx as usize, r.eax as usize))
        })
    });
    table.get(i as usize).copied().flatten()
}

impl FpState {
    /// `XSTATE_BV` from the XSAVE header (bit i set: component i is saved).
    pub fn xstate_bv(&self) -> u64 {
        self.u64_at(512)
    }

    /// The 16-bit, 32-bit or 64-bit little-endian field at `off` (0 if out of range).
    pub fn u64_at(&self, off: usize) -> u64 {
        self.bytes.get(off..off + 8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }

    /// The bytes of XSAVE component `i` (2 = AVX upper halves, 5..7 = AVX-512,
    /// 9 = PKRU, ...) when the area holds it.
    pub fn component(&self, i: u32) -> Option<&[u8]> {
        if self.kind != FpKind::Xsave {
            return None;
        }
        let (off, len) = xsave_component(i)?;
        self.bytes.get(off..off + len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avx_component_is_described() {
        if std::arch::is_x86_feature_detected!("avx") {
            assert_eq!(xsave_component(2), Some((576, 256)));
        }
    }
}
