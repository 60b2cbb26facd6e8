//! Address-space bookkeeping for the restore, pure functions only:
//! checking the final VMA list, the gaps to unmap around what must be
//! kept, and where the running vDSO/vvar land when parked.

use crate::abi::{
    MemRange, VdsoArg, VmaArg, ERR_BAD_VMAS, VMA_FILE_SHARED, VMA_PINNED, VMA_PREMAPPED, VMA_SYSV_SHM, VMA_VDSO, VMA_VVAR,
};
use crate::restore::ctx::{Fail, Step};

fn overlaps(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    alen != 0 && blen != 0 && a < b.saturating_add(blen) && b < a.saturating_add(alen)
}

/// Checks the final layout: sorted, page aligned, disjoint, known kinds,
/// premapped copies inside the premap area, and no final VMA on top of
/// the areas the blob needs (`reserved`: blob, args, bounce, park).
pub fn check_vmas(vmas: &[VmaArg], page: u64, task_size: u64, premap: MemRange, reserved: &[MemRange]) -> Step {
    let mut prev_end = 0u64;
    for (i, v) in vmas.iter().enumerate() {
        let bad = |msg| Fail::new(ERR_BAD_VMAS, i as u64, msg);
        if page == 0 || !page.is_power_of_two() {
            return Err(bad(b"bad page size"));
        }
        if v.start % page != 0 || v.end % page != 0 || v.end <= v.start || v.end > task_size {
            return Err(bad(b"VMA bounds"));
        }
        if v.start < prev_end {
            return Err(bad(b"VMAs unsorted or overlapping"));
        }
        prev_end = v.end;
        let len = v.end - v.start;
        match v.kind {
            VMA_PREMAPPED => {
                let inside = v.premap >= premap.start
                    && v.premap.checked_add(len).is_some_and(|e| e <= premap.start.saturating_add(premap.len));
                if !inside || v.premap % page != 0 {
                    return Err(bad(b"premapped copy outside the premap area"));
                }
            }
            VMA_VDSO => {
                let inside = v.premap == 0
                    || (v.premap >= premap.start
                        && v.premap.checked_add(len).is_some_and(|e| e <= premap.start.saturating_add(premap.len)));
                if !inside || v.premap % page != 0 {
                    return Err(bad(b"vDSO copy outside the premap area"));
                }
            }
            VMA_FILE_SHARED | VMA_PINNED | VMA_VVAR | VMA_SYSV_SHM => {}
            _ => return Err(bad(b"unknown VMA kind")),
        }
        // Pinned VMAs are already in place; the host vouches they do not
        // collide. Anything that will be put in place must not land on the
        // blob's own areas.
        if v.kind != VMA_PINNED && reserved.iter().any(|r| overlaps(v.start, len, r.start, r.len)) {
            return Err(bad(b"VMA collides with the blob's areas"));
        }
    }
    Ok(())
}

/// Sorts a few ranges by start (insertion sort; no allocation, no panics).
fn sort_small(r: &mut [MemRange]) {
    for i in 1..r.len() {
        let mut j = i;
        while j > 0 {
            let (Some(a), Some(b)) = (r.get(j - 1), r.get(j)) else { break };
            if a.start <= b.start {
                break;
            }
            r.swap(j - 1, j);
            j -= 1;
        }
    }
}

/// Calls `unmap(start, len)` for every gap in the window `[lo, hi)` not
/// covered by a `fixed` range or by a VMA of `vmas` (sorted by start) for
/// which `keep_vma` holds. Ranges with `len == 0` are ignored.
pub fn for_each_gap<E>(
    fixed: &mut [MemRange],
    vmas: &[VmaArg],
    keep_vma: impl Fn(&VmaArg) -> bool,
    (lo, hi): (u64, u64),
    mut unmap: impl FnMut(u64, u64) -> Result<(), E>,
) -> Result<(), E> {
    sort_small(fixed);
    let mut cursor = lo;
    let mut keep = |start: u64, end: u64, unmap: &mut dyn FnMut(u64, u64) -> Result<(), E>| {
        let end = end.min(hi);
        if start > cursor && cursor < hi {
            unmap(cursor, start.min(hi) - cursor)?;
        }
        cursor = cursor.max(end);
        Ok(())
    };
    let mut f = fixed.iter().filter(|r| r.len != 0).peekable();
    let mut p = vmas.iter().filter(|v| keep_vma(v)).peekable();
    loop {
        let take_fixed = match (f.peek(), p.peek()) {
            (Some(a), Some(b)) => a.start <= b.start,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        if take_fixed {
            if let Some(r) = f.next() {
                keep(r.start, r.start.saturating_add(r.len), &mut unmap)?;
            }
        } else if let Some(v) = p.next() {
            keep(v.start, v.end, &mut unmap)?;
        }
    }
    if cursor < hi {
        unmap(cursor, hi - cursor)?;
    }
    Ok(())
}

/// Where the running vvar and vDSO are parked: their relative layout is
/// kept, the lower one goes to `park.start`. Returns (vvar, vdso)
/// addresses (0 for an absent one), or `None` if `park` is too small.
pub fn parked(vd: &VdsoArg) -> Option<(u64, u64)> {
    let (vvar, vdso) = (vd.running_vvar, vd.running_vdso);
    let present = [vvar, vdso];
    let lo = present.iter().filter(|r| r.len != 0).map(|r| r.start).min()?;
    let hi = present.iter().filter(|r| r.len != 0).map(|r| r.start.saturating_add(r.len)).max()?;
    if hi - lo > vd.park.len {
        return None;
    }
    let at = |r: MemRange| if r.len == 0 { 0 } else { vd.park.start + (r.start - lo) };
    Some((at(vvar), at(vdso)))
}

/// Whether the running vvar+vDSO can simply be moved to the dumped place:
/// same vDSO size, same vvar size, same distance between them.
pub fn same_vdso_shape(vd: &VdsoArg, dumped_vdso: MemRange) -> bool {
    let (rv, rd, dv) = (vd.running_vvar, vd.running_vdso, vd.dumped_vvar);
    if rd.len == 0 || rd.len != dumped_vdso.len || rv.len != dv.len {
        return false;
    }
    rv.len == 0 || rd.start.wrapping_sub(rv.start) == dumped_vdso.start.wrapping_sub(dv.start)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = 4096;
    const TOP: u64 = 0x7fff_ffff_f000;

    fn vma(start: u64, end: u64, kind: u32, premap: u64) -> VmaArg {
        VmaArg { start, end, kind, premap, fd: -1, ..Default::default() }
    }

    fn r(start: u64, len: u64) -> MemRange {
        MemRange { start, len }
    }

    fn gaps(fixed: &mut [MemRange], vmas: &[VmaArg]) -> Vec<(u64, u64)> {
        let mut out = vec![];
        for_each_gap::<()>(fixed, vmas, |v| v.kind == VMA_PINNED, (0, TOP), |a, l| {
            out.push((a, l));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn gaps_cover_everything_but_the_keepers() {
        let vmas = [
            vma(0x1000, 0x3000, VMA_PINNED, 0),
            vma(0x10000, 0x20000, VMA_PREMAPPED, 0x5000_0000),
            vma(0x5000_2000, 0x5000_3000, VMA_PINNED, 0),
        ];
        let mut fixed = [r(0x7000_0000, 0x10000), r(0x5000_0000, 0x2000), r(0, 0), r(0x4000_0000, 0x1000)];
        let g = gaps(&mut fixed, &vmas);
        assert_eq!(
            g,
            vec![
                (0, 0x1000),
                (0x3000, 0x4000_0000 - 0x3000),
                (0x4000_1000, 0x5000_0000 - 0x4000_1000),
                (0x5000_3000, 0x7000_0000 - 0x5000_3000),
                (0x7001_0000, TOP - 0x7001_0000),
            ]
        );
    }

    #[test]
    fn gaps_handle_adjacent_and_nested_keepers() {
        let vmas = [vma(0x2000, 0x3000, VMA_PINNED, 0)];
        let mut fixed = [r(0, 0x2000), r(0x1000, 0x4000), r(TOP - 0x1000, 0x1000)];
        assert_eq!(gaps(&mut fixed, &vmas), vec![(0x5000, TOP - 0x1000 - 0x5000)]);
        let mut none: [MemRange; 0] = [];
        assert_eq!(gaps(&mut none, &[]), vec![(0, TOP)]);
        // A window: what of the premap area no final VMA covers.
        let vmas = [vma(0x1000, 0x3000, VMA_PREMAPPED, 0), vma(0x8000, 0x9000, VMA_FILE_SHARED, 0)];
        let mut out = vec![];
        for_each_gap::<()>(&mut [], &vmas, |_| true, (0x2000, 0xa000), |a, l| {
            out.push((a, l));
            Ok(())
        })
        .unwrap();
        assert_eq!(out, vec![(0x3000, 0x5000), (0x9000, 0x1000)]);
        // Keepers past the window's end once it is covered: no empty gap.
        let vmas = [vma(0x1000, 0xa000, VMA_PINNED, 0), vma(0xb000, 0xc000, VMA_PINNED, 0)];
        let mut out = vec![];
        for_each_gap::<()>(&mut [], &vmas, |_| true, (0x2000, 0xa000), |a, l| {
            out.push((a, l));
            Ok(())
        })
        .unwrap();
        assert_eq!(out, vec![]);
    }

    #[test]
    fn vma_checks() {
        let premap = r(0x6000_0000, 0x10_0000);
        let reserved = [r(0x7000_0000, 0x1000)];
        let ok = [vma(0x1000, 0x3000, VMA_PREMAPPED, 0x6000_0000), vma(0x3000, 0x4000, VMA_FILE_SHARED, 0)];
        assert_eq!(check_vmas(&ok, P, TOP, premap, &reserved), Ok(()));
        let cases: [(&[VmaArg], &str); 6] = [
            (&[vma(0x1000, 0x1800, VMA_PINNED, 0)], "VMA bounds"),
            (&[vma(0x3000, 0x4000, VMA_PINNED, 0), vma(0x1000, 0x2000, VMA_PINNED, 0)], "unsorted"),
            (&[vma(0x1000, 0x3000, VMA_PREMAPPED, 0x6010_0000)], "premap"),
            (&[vma(0x1000, 0x3000, 99, 0)], "unknown"),
            (&[vma(0x7000_0000, 0x7000_1000, VMA_FILE_SHARED, 0)], "collides"),
            (&[vma(0x1000, 0x2000, VMA_VDSO, 0x1234)], "vDSO copy"),
        ];
        for (vmas, what) in cases {
            let e = check_vmas(vmas, P, TOP, premap, &reserved).unwrap_err();
            assert!(std::str::from_utf8(e.msg).unwrap().contains(what), "{what}: {:?}", std::str::from_utf8(e.msg));
        }
    }

    /// The edges of each check: a VMA touching a reserved area or the top
    /// of the address space is fine, one byte more is not; a page size that
    /// is not a power of two is refused (mutation testing found these
    /// unchecked).
    #[test]
    fn vma_check_edges() {
        let premap = r(0x6000_0000, 0x10_0000);
        let reserved = [r(0x7000_0000, 0x1000)];
        let check = |vmas: &[VmaArg], page, top| check_vmas(vmas, page, top, premap, &reserved);
        // Touching the reserved area from below and from above.
        assert_eq!(check(&[vma(0x6fff_f000, 0x7000_0000, VMA_FILE_SHARED, 0)], P, TOP), Ok(()));
        assert_eq!(check(&[vma(0x7000_1000, 0x7000_2000, VMA_FILE_SHARED, 0)], P, TOP), Ok(()));
        // Ending exactly at the top, or one page past it.
        assert_eq!(check(&[vma(TOP - P, TOP, VMA_FILE_SHARED, 0)], P, TOP), Ok(()));
        let e = check(&[vma(TOP - P, TOP + P, VMA_FILE_SHARED, 0)], P, TOP).unwrap_err();
        assert_eq!(e.msg, b"VMA bounds");
        // A page size that is not a power of two.
        let e = check(&[vma(0x3000, 0x6000, VMA_FILE_SHARED, 0)], 0x3000, TOP).unwrap_err();
        assert_eq!(e.msg, b"bad page size");
    }

    /// Where a premapped copy and a vDSO copy may lie: wholly inside the
    /// premap area and page aligned (a vDSO may also have no copy, 0).
    #[test]
    fn copies_must_lie_inside_the_premap_area() {
        let premap = r(0x6000_0000, 0x10_0000);
        let end = premap.start + premap.len;
        let check = |v: VmaArg| check_vmas(&[v], P, TOP, premap, &[]).map_err(|e| e.msg);
        assert_eq!(check(vma(0x1000, 0x3000, VMA_PREMAPPED, end - 0x2000)), Ok(()));
        assert_eq!(check(vma(0x1000, 0x3000, VMA_PREMAPPED, end - 0x1000)), Err(&b"premapped copy outside the premap area"[..]));
        assert_eq!(check(vma(0x1000, 0x3000, VMA_VDSO, 0)), Ok(()));
        assert_eq!(check(vma(0x1000, 0x3000, VMA_VDSO, premap.start)), Ok(()));
        assert_eq!(check(vma(0x1000, 0x3000, VMA_VDSO, end - 0x2000)), Ok(()));
        for bad in [premap.start - P, premap.start + 0x800, end - 0x1000, end] {
            assert_eq!(check(vma(0x1000, 0x3000, VMA_VDSO, bad)), Err(&b"vDSO copy outside the premap area"[..]), "{bad:#x}");
        }
    }

    #[test]
    fn parking_keeps_relative_layout() {
        let vd = VdsoArg {
            running_vvar: r(0x7f00_0000_0000, 0x6000),
            running_vdso: r(0x7f00_0000_6000, 0x2000),
            park: r(0x1000_0000, 0x8000),
            ..Default::default()
        };
        assert_eq!(parked(&vd), Some((0x1000_0000, 0x1000_6000)));
        assert_eq!(parked(&VdsoArg { park: r(0x1000_0000, 0x7000), ..vd }), None);
        assert_eq!(parked(&VdsoArg { running_vvar: r(0, 0), ..vd }), Some((0, 0x1000_0000)));
        assert_eq!(parked(&VdsoArg::default()), None);
        let dumped = r(0x7e00_0000_6000, 0x2000);
        let same = VdsoArg { dumped_vvar: r(0x7e00_0000_0000, 0x6000), ..vd };
        assert!(same_vdso_shape(&same, dumped));
        assert!(!same_vdso_shape(&VdsoArg { dumped_vvar: r(0x7e00_0000_1000, 0x6000), ..vd }, dumped));
        assert!(!same_vdso_shape(&same, r(dumped.start, 0x3000)));
        assert!(!same_vdso_shape(&VdsoArg { running_vdso: r(0, 0), ..same }, dumped));
    }
}
