//! Building a standard-format XSAVE area from CRIU's `user_x86_fpregs_entry`.
//!
//! CRIU stores the FPU state field by field (FXSAVE legacy fields, then each
//! XSAVE component as an array). The blob wants the raw area as
//! `PTRACE_GETREGSET(NT_X86_XSTATE)` returns it; component offsets come from
//! CPUID leaf 0xD of this host, and `xstate_bv` is limited to the features
//! the host enables.

use crate::images::pb::UserX86FpregsEntry;

/// Size of the legacy FXSAVE region.
const LEGACY: usize = 512;
/// Size of the XSAVE header that follows it.
const HEADER: usize = 64;

use crate::ptrace::regs::xsave_component as component;

/// The XCR0 features the host supports (CPUID(0xD, 0) EDX:EAX) and the
/// XSAVE area size for the enabled ones (EBX). Read once per process, with
/// every component's place: call it before forking tasks, which then
/// inherit the answers (CPUID traps to the hypervisor in a VM).
pub fn host_xfeatures() -> (u64, usize) {
    static HOST: std::sync::OnceLock<(u64, usize)> = std::sync::OnceLock::new();
    *HOST.get_or_init(|| {
        let _ = component(2);
        let r = std::arch::x86_64::__cpuid_count(0xd, 0);
        (((r.edx as u64) << 32) | r.eax as u64, r.ebx as usize)
    })
}

/// Copies little-endian words into `area` at `off`, never past `len` bytes.
fn put_words<T: Copy>(area: &mut [u8], off: usize, len: usize, words: &[T], to_le: fn(T) -> Vec<u8>) {
    let bytes: Vec<u8> = words.iter().flat_map(|&w| to_le(w)).collect();
    let n = bytes.len().min(len).min(area.len().saturating_sub(off));
    area[off..off + n].copy_from_slice(&bytes[..n]);
}

fn le32(w: u32) -> Vec<u8> {
    w.to_le_bytes().to_vec()
}

fn le64(w: u64) -> Vec<u8> {
    w.to_le_bytes().to_vec()
}

/// The XSAVE area for `fp` (empty if the host has no XSAVE).
pub fn xsave_area(fp: &UserX86FpregsEntry) -> Vec<u8> {
    let (supported, size) = host_xfeatures();
    let mut a = vec![0u8; size.max(LEGACY + HEADER)];
    let u16_at = |a: &mut [u8], off: usize, v: u32| a[off..off + 2].copy_from_slice(&(v as u16).to_le_bytes());
    u16_at(&mut a, 0, fp.cwd.unwrap_or_default());
    u16_at(&mut a, 2, fp.swd.unwrap_or_default());
    u16_at(&mut a, 4, fp.twd.unwrap_or_default());
    u16_at(&mut a, 6, fp.fop.unwrap_or_default());
    a[8..16].copy_from_slice(&fp.rip.unwrap_or_default().to_le_bytes());
    a[16..24].copy_from_slice(&fp.rdp.unwrap_or_default().to_le_bytes());
    a[24..28].copy_from_slice(&fp.mxcsr.unwrap_or_default().to_le_bytes());
    a[28..32].copy_from_slice(&fp.mxcsr_mask.unwrap_or_default().to_le_bytes());
    put_words(&mut a, 32, 128, &fp.st_space, le32);
    put_words(&mut a, 160, 256, &fp.xmm_space, le32);
    // x87 and SSE state are always present in the area.
    let mut xstate_bv = 0b11;
    if let Some(x) = &fp.xsave {
        xstate_bv |= x.xstate_bv.unwrap_or_default();
        let comps: [(u32, &[u64]); 5] = [
            (3, &x.bndreg_state),
            (4, &x.bndcsr_state),
            (5, &x.opmask_reg),
            (6, &x.zmm_upper),
            (7, &x.hi16_zmm),
        ];
        if let Some((off, len)) = component(2) {
            put_words(&mut a, off, len, &x.ymmh_space, le32);
        }
        for (i, words) in comps {
            if let Some((off, len)) = component(i) {
                put_words(&mut a, off, len, words, le64);
            }
        }
        if let Some((off, len)) = component(9) {
            put_words(&mut a, off, len, &x.pkru, le32);
        }
    }
    xstate_bv &= supported | 0b11;
    a[LEGACY..LEGACY + 8].copy_from_slice(&xstate_bv.to_le_bytes());
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::pb::UserX86XsaveEntry;

    #[test]
    fn legacy_fields_and_avx_land_at_their_offsets() {
        let fp = UserX86FpregsEntry {
            cwd: Some(0x37f),
            mxcsr: Some(0x1f80),
            xmm_space: (0..64).collect(),
            xsave: Some(UserX86XsaveEntry { xstate_bv: Some(0b111), ymmh_space: (100..164).collect(), ..Default::default() }),
            ..Default::default()
        };
        let a = xsave_area(&fp);
        assert_eq!(&a[0..2], &0x37fu16.to_le_bytes());
        assert_eq!(&a[24..28], &0x1f80u32.to_le_bytes());
        assert_eq!(&a[160 + 4..168], &1u32.to_le_bytes());
        if std::arch::is_x86_feature_detected!("avx") {
            assert_eq!(u64::from_le_bytes(a[512..520].try_into().unwrap()) & 0b111, 0b111);
            assert_eq!(&a[576..580], &100u32.to_le_bytes());
        }
    }
}
