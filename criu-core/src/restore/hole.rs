//! Finding a free address range that collides with nothing given.
//!
//! The premap area and the blob must avoid both the target layout (where the
//! restored VMAs will land) and whatever the restoring process has mapped now.

/// Lowest address handed out (keeps clear of `vm.mmap_min_addr` and low mappings).
const LOW: u64 = 0x1000_0000;
/// One past the highest user address on x86_64 with 4-level paging.
pub const TASK_SIZE: u64 = 0x7fff_ffff_f000;

/// Finds a `size`-byte range, aligned to `align`, disjoint from every
/// `[start, end)` in `busy` with `gap` bytes of clearance on both sides.
/// Searches from the top of the address space down, as mmap does.
pub fn find_hole(busy: &[(u64, u64)], size: u64, align: u64, gap: u64) -> Option<u64> {
    let mut ranges: Vec<(u64, u64)> = busy
        .iter()
        .filter(|(s, e)| s < e)
        .map(|&(s, e)| (s.saturating_sub(gap).min(TASK_SIZE), e.saturating_add(gap).min(TASK_SIZE)))
        .collect();
    ranges.sort_unstable();
    // The free gaps between busy ranges, bottom to top.
    let mut gaps = Vec::with_capacity(ranges.len() + 1);
    let mut floor = LOW;
    for &(s, e) in &ranges {
        if s > floor {
            gaps.push((floor, s));
        }
        floor = floor.max(e);
    }
    if TASK_SIZE > floor {
        gaps.push((floor, TASK_SIZE));
    }
    // Highest fit first, as mmap does.
    gaps.iter().rev().find_map(|&(lo, hi)| {
        let top = hi.checked_sub(size)? & !(align - 1);
        (top >= lo).then_some(top)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avoids_busy_ranges_with_clearance() {
        let busy = [(0x7000_0000_0000, TASK_SIZE), (0x2000_0000, 0x6fff_fff0_0000), (0xffff_ffff_ff60_0000, 0xffff_ffff_ff60_1000)];
        let a = find_hole(&busy, 0x10000, 0x1000, 0x1000).unwrap();
        assert!(a + 0x10000 + 0x1000 <= 0x7000_0000_0000 && a >= 0x6fff_fff0_0000 + 0x1000);
    }

    #[test]
    fn falls_back_to_lower_gaps_and_fails_when_full() {
        let busy = [(0x3000_0000, TASK_SIZE)];
        let a = find_hole(&busy, 0x100000, 0x1000, 0).unwrap();
        assert!(a >= LOW && a + 0x100000 <= 0x3000_0000);
        assert!(find_hole(&[(0, TASK_SIZE)], 0x1000, 0x1000, 0).is_none());
    }
}
