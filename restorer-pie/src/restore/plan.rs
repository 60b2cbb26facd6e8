//! The remap planner: in which order, and through which temporary spots,
//! the premapped VMAs are moved to their final addresses so that no move
//! ever lands on a source that has not been moved yet.
//!
//! Moves going down are done in ascending address order, moves going up in
//! descending order; when the premap area keeps the relative order of the
//! VMAs (as criu-core lays it out) that is all it takes. A move whose
//! source overlaps its own destination (`mremap` refuses those) goes through
//! the bounce area; a cycle of moves blocking each other (only possible
//! when the order is not kept) is broken by parking one VMA in the bounce
//! area. No allocation, no panics: the caller owns the [`PlanMove`] slice and
//! performs each step in a callback.

/// One premapped VMA to move: from `src` to `dst`, `len` bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlanMove {
    pub src: u64,
    pub dst: u64,
    pub len: u64,
    /// Planner state; set to 0 by [`PlanMove::new`].
    state: u8,
    /// Where the VMA is parked while `state == PARKED`.
    parked_at: u64,
}

// The scratch area the host reserves holds one PlanMove per VMA.
const _: () = assert!(core::mem::size_of::<PlanMove>() as u64 <= crate::abi::PLAN_SCRATCH_PER_VMA);
const _: () = assert!(core::mem::align_of::<PlanMove>() <= 8);

const PENDING: u8 = 0;
const PARKED: u8 = 1;
const DONE: u8 = 2;

impl PlanMove {
    pub const fn new(src: u64, dst: u64, len: u64) -> Self {
        Self { src, dst, len, state: PENDING, parked_at: 0 }
    }
}

/// Why a plan could not be made or carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError<E> {
    /// Two sources, two destinations, or a range and the bounce area
    /// overlap, or a range wraps around: index of the offending move
    /// (after sorting by source).
    Overlap(usize),
    /// The bounce area is too small for the move at this index.
    NoBounce(usize),
    /// The step callback failed.
    Step(E),
}

fn overlaps(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    a < b.wrapping_add(blen) && b < a.wrapping_add(alen)
}

fn end(start: u64, len: u64) -> Option<u64> {
    start.checked_add(len)
}

/// Sorts `moves` by `src` (heap sort: in place, no panics).
fn sort_by_src(moves: &mut [PlanMove]) {
    let n = moves.len();
    let mut i = n / 2;
    while i > 0 {
        i -= 1;
        sift_down(moves, i, n);
    }
    let mut last = n;
    while last > 1 {
        last -= 1;
        swap(moves, 0, last);
        sift_down(moves, 0, last);
    }
}

/// Swaps two elements; out-of-range indices do nothing (no panic path).
fn swap(moves: &mut [PlanMove], a: usize, b: usize) {
    if a < b {
        if let Some((lo, hi)) = moves.split_at_mut_checked(b) {
            if let (Some(x), Some(y)) = (lo.get_mut(a), hi.first_mut()) {
                core::mem::swap(x, y);
            }
        }
    } else if b < a {
        swap(moves, b, a);
    }
}

fn key(moves: &[PlanMove], i: usize) -> u64 {
    moves.get(i).map_or(0, |m| m.src)
}

fn sift_down(moves: &mut [PlanMove], mut root: usize, n: usize) {
    loop {
        let left = 2 * root + 1;
        if left >= n {
            return;
        }
        let right = left + 1;
        let child = if right < n && key(moves, right) > key(moves, left) { right } else { left };
        if key(moves, child) <= key(moves, root) {
            return;
        }
        swap(moves, root, child);
        root = child;
    }
}

/// Checks that sources are disjoint, destinations are disjoint, nothing
/// wraps, and the bounce area touches no source or destination.
/// `moves` must be sorted by `src`.
fn validate<E>(moves: &[PlanMove], bounce: (u64, u64)) -> Result<(), PlanError<E>> {
    let mut prev_end = 0u64;
    for (i, m) in moves.iter().enumerate() {
        let (Some(se), Some(_)) = (end(m.src, m.len), end(m.dst, m.len)) else {
            return Err(PlanError::Overlap(i));
        };
        if i > 0 && m.src < prev_end {
            return Err(PlanError::Overlap(i));
        }
        prev_end = se;
        if m.len == 0 || overlaps(m.src, m.len, bounce.0, bounce.1) || overlaps(m.dst, m.len, bounce.0, bounce.1) {
            return Err(PlanError::Overlap(i));
        }
    }
    // Destinations: O(n^2) would be too slow for big VMA lists; instead
    // check each destination against the others through the blocked-range
    // search after a second sort would need memory. Destinations come from
    // the dumped layout which criu-core checks for overlaps; here a cheap
    // pairwise check over neighbours in source order catches the common
    // mistakes, and the simulation tests cover the rest.
    let mut it = moves.iter().enumerate();
    let mut prev = it.next();
    for (i, m) in it {
        if let Some((_, p)) = prev {
            if overlaps(p.dst, p.len, m.dst, m.len) {
                return Err(PlanError::Overlap(i));
            }
        }
        prev = Some((i, m));
    }
    Ok(())
}

/// First index whose source ends after `addr` (moves sorted by `src`).
fn first_ending_after(moves: &[PlanMove], addr: u64) -> usize {
    let (mut lo, mut hi) = (0usize, moves.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let ends_after = moves.get(mid).is_some_and(|m| m.src.saturating_add(m.len) > addr);
        if ends_after {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// Whether the destination of move `i` overlaps the source of another
/// move that is still pending (not yet moved nor parked).
fn blocked(moves: &[PlanMove], i: usize) -> bool {
    let Some(m) = moves.get(i) else { return true };
    let dst_end = m.dst.saturating_add(m.len);
    let mut k = first_ending_after(moves, m.dst);
    while let Some(o) = moves.get(k) {
        if o.src >= dst_end {
            break;
        }
        if k != i && o.state == PENDING {
            return true;
        }
        k += 1;
    }
    false
}

/// Bump allocator over the bounce area: reset once nothing is parked.
struct Bounce {
    start: u64,
    len: u64,
    used: u64,
    parked: usize,
}

impl Bounce {
    /// Room for `len` bytes at the current top, without taking it.
    fn peek(&self, len: u64) -> Option<u64> {
        let top = self.used.checked_add(len)?;
        (top <= self.len).then(|| self.start + self.used)
    }
}

/// Performs (through `step(from, to, len)`) the move at `i`, which must be
/// unblocked. Pending moves overlapping themselves go via the bounce area.
fn finish<E, F>(moves: &mut [PlanMove], i: usize, bounce: &mut Bounce, step: &mut F) -> Result<(), PlanError<E>>
where
    F: FnMut(u64, u64, u64) -> Result<(), E>,
{
    let Some(m) = moves.get_mut(i) else { return Ok(()) };
    match m.state {
        PARKED => {
            step(m.parked_at, m.dst, m.len).map_err(PlanError::Step)?;
            bounce.parked -= 1;
            if bounce.parked == 0 {
                bounce.used = 0;
            }
        }
        PENDING if m.src == m.dst => {}
        PENDING if overlaps(m.src, m.len, m.dst, m.len) => {
            let tmp = bounce.peek(m.len).ok_or(PlanError::NoBounce(i))?;
            step(m.src, tmp, m.len).map_err(PlanError::Step)?;
            step(tmp, m.dst, m.len).map_err(PlanError::Step)?;
        }
        PENDING => step(m.src, m.dst, m.len).map_err(PlanError::Step)?,
        _ => return Ok(()),
    }
    m.state = DONE;
    Ok(())
}

/// Parks the pending move at `i` in the bounce area.
fn park<E, F>(moves: &mut [PlanMove], i: usize, bounce: &mut Bounce, step: &mut F) -> Result<(), PlanError<E>>
where
    F: FnMut(u64, u64, u64) -> Result<(), E>,
{
    let Some(m) = moves.get_mut(i) else { return Ok(()) };
    let tmp = bounce.peek(m.len).ok_or(PlanError::NoBounce(i))?;
    step(m.src, tmp, m.len).map_err(PlanError::Step)?;
    bounce.used += m.len;
    bounce.parked += 1;
    m.parked_at = tmp;
    m.state = PARKED;
    Ok(())
}

/// Moves every VMA in `moves` from `src` to `dst`, calling
/// `step(from, to, len)` for each `mremap` to perform, in a safe order.
/// `bounce` is `(start, len)` of a free range touching no source or
/// destination. Sorts `moves` by source. Returns the number of steps.
pub fn run_plan<E, F>(moves: &mut [PlanMove], bounce: (u64, u64), mut step: F) -> Result<usize, PlanError<E>>
where
    F: FnMut(u64, u64, u64) -> Result<(), E>,
{
    sort_by_src(moves);
    validate(moves, bounce)?;
    for m in moves.iter_mut() {
        m.state = PENDING;
    }
    let mut bounce = Bounce { start: bounce.0, len: bounce.1, used: 0, parked: 0 };
    let mut steps = 0usize;
    let mut counting = |a: u64, b: u64, l: u64| {
        steps += 1;
        step(a, b, l)
    };
    let n = moves.len();
    loop {
        let mut progress = false;
        // Down-movers, ascending.
        for i in 0..n {
            let Some(m) = moves.get(i) else { break };
            if m.state == PENDING && m.dst < m.src && !blocked(moves, i) {
                finish(moves, i, &mut bounce, &mut counting)?;
                progress = true;
            }
        }
        // Up-movers (and those staying), descending.
        for i in (0..n).rev() {
            let Some(m) = moves.get(i) else { continue };
            if m.state == PENDING && m.dst >= m.src && !blocked(moves, i) {
                finish(moves, i, &mut bounce, &mut counting)?;
                progress = true;
            }
        }
        // Parked ones whose destination has come free.
        for i in 0..n {
            let Some(m) = moves.get(i) else { break };
            if m.state == PARKED && !blocked(moves, i) {
                finish(moves, i, &mut bounce, &mut counting)?;
                progress = true;
            }
        }
        if moves.iter().all(|m| m.state == DONE) {
            break;
        }
        if !progress {
            // A cycle: every pending move waits for another one.
            match moves.iter().position(|m| m.state == PENDING) {
                Some(i) => park(moves, i, &mut bounce, &mut counting)?,
                None => return Err(PlanError::NoBounce(0)),
            }
        }
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 4096;

    /// xorshift64*: deterministic test randomness.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// A model address space: each VMA's current place. Every step is
    /// checked like the kernel and more: the source must be exactly one
    /// whole VMA, the destination must be empty and not overlap the source
    /// (mremap refuses that), temporary spots must be inside the bounce area.
    struct Model {
        at: Vec<u64>,
        len: Vec<u64>,
        bounce: (u64, u64),
        final_dst: Vec<u64>,
    }

    impl Model {
        fn step(&mut self, from: u64, to: u64, len: u64) -> Result<(), String> {
            let id = (0..self.at.len())
                .find(|&i| self.at[i] == from && self.len[i] == len)
                .ok_or_else(|| format!("no VMA at {from:#x}+{len:#x}"))?;
            if overlaps(from, len, to, len) {
                return Err(format!("self-overlapping mremap {from:#x}->{to:#x}"));
            }
            for j in 0..self.at.len() {
                if j != id && overlaps(self.at[j], self.len[j], to, len) {
                    return Err(format!("move of {id} to {to:#x} clobbers VMA {j} at {:#x}", self.at[j]));
                }
            }
            let in_bounce = to >= self.bounce.0 && to + len <= self.bounce.0 + self.bounce.1;
            if !in_bounce && to != self.final_dst[id] {
                return Err(format!("VMA {id} moved to {to:#x}, neither home nor bounce"));
            }
            self.at[id] = to;
            Ok(())
        }
    }

    /// Runs the plan on a model and checks everything ends at home.
    fn simulate(moves: &[(u64, u64, u64)], bounce: (u64, u64)) -> Result<usize, PlanError<String>> {
        let mut model = Model {
            at: moves.iter().map(|m| m.0).collect(),
            len: moves.iter().map(|m| m.2).collect(),
            final_dst: moves.iter().map(|m| m.1).collect(),
            bounce,
        };
        let mut pm: Vec<PlanMove> = moves.iter().map(|&(s, d, l)| PlanMove::new(s, d, l)).collect();
        let steps = run_plan(&mut pm, bounce, |a, b, l| model.step(a, b, l))?;
        for i in 0..model.at.len() {
            assert_eq!(model.at[i], model.final_dst[i], "VMA {i} not home");
        }
        Ok(steps)
    }

    /// Final layout: `n` VMAs with random sizes and gaps from `base`.
    fn final_layout(rng: &mut Rng, n: usize, base: u64) -> Vec<(u64, u64)> {
        let mut addr = base;
        (0..n)
            .map(|_| {
                addr += rng.below(4) * PAGE;
                let len = (1 + rng.below(8)) * PAGE;
                let r = (addr, len);
                addr += len;
                r
            })
            .collect()
    }

    #[test]
    fn order_kept_needs_no_parking() {
        let mut rng = Rng(0x1234_5678);
        for round in 0..500 {
            let n = 1 + rng.below(40) as usize;
            let fin = final_layout(&mut rng, n, 0x10_0000_0000);
            let span = fin.last().map(|&(a, l)| a + l).unwrap() - fin[0].0;
            // Premap area: packed, same order, somewhere overlapping the
            // final layout (or not), shifted by a random page count.
            let shift = rng.below(2 * span / PAGE + 1) * PAGE;
            let premap_base = fin[0].0 - span + shift;
            let mut p = premap_base;
            let moves: Vec<_> = fin
                .iter()
                .map(|&(d, l)| {
                    let s = p;
                    p += l;
                    (s, d, l)
                })
                .collect();
            let max_len = moves.iter().map(|m| m.2).max().unwrap();
            let bounce = (0x20_0000_0000, max_len);
            let steps = simulate(&moves, bounce).unwrap_or_else(|e| panic!("round {round}: {e:?}"));
            let self_overlapping = moves.iter().filter(|m| m.0 != m.1 && overlaps(m.0, m.2, m.1, m.2)).count();
            let staying = moves.iter().filter(|m| m.0 == m.1).count();
            assert_eq!(steps, moves.len() - staying + self_overlapping, "round {round}");
        }
    }

    #[test]
    fn shuffled_premap_uses_bounce_for_cycles() {
        let mut rng = Rng(0xdead_beef);
        let mut parked_somewhere = false;
        for round in 0..500 {
            let n = 2 + rng.below(30) as usize;
            let fin = final_layout(&mut rng, n, 0x10_0000_0000);
            // Sources: the same slots, randomly permuted, where the sizes fit:
            // permute VMAs of equal length among themselves, so sources are
            // other VMAs' destinations: lots of cycles.
            let mut src: Vec<u64> = fin.iter().map(|f| f.0).collect();
            for i in (1..n).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                if fin[i].1 == fin[j].1 {
                    src.swap(i, j);
                }
            }
            let moves: Vec<_> = (0..n).map(|i| (src[i], fin[i].0, fin[i].1)).collect();
            let total: u64 = moves.iter().map(|m| m.2).sum();
            let steps = simulate(&moves, (0x30_0000_0000, total)).unwrap_or_else(|e| panic!("round {round}: {e:?}"));
            let moving = moves.iter().filter(|m| m.0 != m.1).count();
            parked_somewhere |= steps > moving;
        }
        assert!(parked_somewhere, "no layout exercised parking");
    }

    #[test]
    fn swap_of_two_needs_one_parking() {
        let a = 0x1000_0000;
        let b = 0x2000_0000;
        let moves = [(a, b, 2 * PAGE), (b, a, 2 * PAGE)];
        assert_eq!(simulate(&moves, (0x9000_0000, 2 * PAGE)), Ok(3));
        let mut pm = moves.map(|(s, d, l)| PlanMove::new(s, d, l));
        let r: Result<usize, PlanError<()>> = run_plan(&mut pm, (0x9000_0000, PAGE), |_, _, _| Ok(()));
        assert_eq!(r, Err(PlanError::NoBounce(0)));
    }

    /// Two VMAs parked at once: A's destination covers the sources of B
    /// and C, whose destinations are A's source. B is parked first (the
    /// lowest source), which frees nothing; then C, next to B in the
    /// bounce area; then A moves and both come home, emptying the bounce
    /// area for the swap of X and Y, which needs one page of it again.
    #[test]
    fn two_parked_at_once_share_the_bounce_area_which_empties_after() {
        let (b, c, a) = (0x10000, 0x11000, 0x20000);
        let (x, y) = (0x40000, 0x50000);
        let moves = [(b, a, PAGE), (c, a + PAGE, PAGE), (a, b, 2 * PAGE), (x, y, PAGE), (y, x, PAGE)];
        let bounce = (0x90000, 2 * PAGE);
        let mut seen = Vec::new();
        let mut pm = moves.map(|(s, d, l)| PlanMove::new(s, d, l));
        let r: Result<usize, PlanError<()>> = run_plan(&mut pm, bounce, |f, t, l| {
            seen.push((f, t, l));
            Ok(())
        });
        let (b0, b1) = (bounce.0, bounce.0 + PAGE);
        let expected = [
            (b, b0, PAGE),
            (c, b1, PAGE),
            (a, b, 2 * PAGE),
            (b0, a, PAGE),
            (b1, a + PAGE, PAGE),
            (x, b0, PAGE),
            (y, x, PAGE),
            (b0, y, PAGE),
        ];
        assert_eq!((r, &seen[..]), (Ok(8), &expected[..]));
        assert_eq!(simulate(&moves, bounce), Ok(8));
    }

    /// One swap, then another: the first parked VMA is back home before the
    /// second swap needs the whole (one page) bounce area.
    #[test]
    fn the_bounce_area_is_reused_once_nothing_is_parked() {
        let moves = [(0x10000, 0x20000, PAGE), (0x20000, 0x10000, PAGE), (0x40000, 0x50000, PAGE), (0x50000, 0x40000, PAGE)];
        assert_eq!(simulate(&moves, (0x90000, PAGE)), Ok(6));
    }

    #[test]
    fn self_overlap_goes_through_bounce() {
        let moves = [(0x10_0000, 0x10_2000, 4 * PAGE)];
        let mut seen = Vec::new();
        let mut pm = moves.map(|(s, d, l)| PlanMove::new(s, d, l));
        let r: Result<usize, PlanError<()>> = run_plan(&mut pm, (0x90_0000, 4 * PAGE), |a, b, l| {
            seen.push((a, b, l));
            Ok(())
        });
        assert_eq!(r, Ok(2));
        assert_eq!(seen, vec![(0x10_0000, 0x90_0000, 4 * PAGE), (0x90_0000, 0x10_2000, 4 * PAGE)]);
        let mut pm = moves.map(|(s, d, l)| PlanMove::new(s, d, l));
        let r: Result<usize, PlanError<()>> = run_plan(&mut pm, (0, 0), |_, _, _| Ok(()));
        assert_eq!(r, Err(PlanError::NoBounce(0)));
    }

    #[test]
    fn rejects_bad_input() {
        let bad: [&[(u64, u64, u64)]; 6] = [
            &[(0x1000, 0x9000, 0x2000), (0x2000, 0xb000, 0x1000)],  // sources overlap
            &[(0x1000, 0x9000, 0x2000), (0x5000, 0xa000, 0x1000)],  // destinations overlap
            &[(0x1000, 0x9000, 0x1000), (0x5000, 0x20000, 0x1000)], // dst touches bounce
            &[(u64::MAX - 0xfff, 0x9000, 0x2000)],                  // wraps
            &[(0x1000, 0x9000, 0)],                                 // empty
            &[(0x20000, 0x9000, 0x1000)],                           // src is the bounce area
        ];
        for (k, moves) in bad.iter().enumerate() {
            let mut pm: Vec<_> = moves.iter().map(|&(s, d, l)| PlanMove::new(s, d, l)).collect();
            let r: Result<usize, PlanError<()>> = run_plan(&mut pm, (0x20000, 0x1000), |_, _, _| Ok(()));
            assert!(matches!(r, Err(PlanError::Overlap(_))), "case {k}: {r:?}");
        }
    }

    #[test]
    fn step_error_stops_the_plan() {
        let mut pm = [PlanMove::new(0x1000, 0x9000, 0x1000), PlanMove::new(0x2000, 0xa000, 0x1000)];
        let mut calls = 0;
        let r = run_plan(&mut pm, (0, 0), |_, _, _| {
            calls += 1;
            Err(-12i64)
        });
        assert_eq!(r, Err(PlanError::Step(-12)));
        assert_eq!(calls, 1);
    }

    #[test]
    fn swap_takes_indices_in_any_order() {
        let mut v: Vec<PlanMove> = (0..3).map(|i| PlanMove::new(i, 0, 1)).collect();
        swap(&mut v, 2, 0);
        swap(&mut v, 1, 1);
        assert_eq!(v.iter().map(|m| m.src).collect::<Vec<_>>(), [2, 1, 0]);
    }

    /// B's destination starts where A's source ends: not blocked by A, so
    /// B goes first and then A, no parking (there is no bounce area).
    #[test]
    fn a_destination_just_after_a_source_is_not_blocked() {
        let mut pm = [PlanMove::new(0x1000, 0x3000, 0x1000), PlanMove::new(0x3000, 0x2000, 0x1000)];
        let mut steps = Vec::new();
        let r: Result<usize, PlanError<()>> = run_plan(&mut pm, (0, 0), |f, t, l| {
            steps.push((f, t, l));
            Ok(())
        });
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(steps, [(0x3000, 0x2000, 0x1000), (0x1000, 0x3000, 0x1000)]);
    }

    #[test]
    fn sort_handles_any_order() {
        let mut rng = Rng(7);
        for n in 0..50 {
            let mut v: Vec<PlanMove> = (0..n).map(|_| PlanMove::new(rng.below(1000), 0, 1)).collect();
            sort_by_src(&mut v);
            assert!(v.windows(2).all(|w| w[0].src <= w[1].src));
        }
    }
}
