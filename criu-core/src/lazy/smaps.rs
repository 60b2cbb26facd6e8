//! Which parts of a task's memory are registered with a userfaultfd in
//! MISSING mode, from the `um` flag of `/proc/PID/smaps`'s `VmFlags`. The
//! daemon checks at hand-over that every lazy page is covered: a lazy page
//! outside a registered range would silently read as zero.

/// The `[start, end)` ranges of `pid` whose VMAs carry `um`, adjacent ones
/// merged, in address order.
pub fn missing_registered(pid: u32) -> std::io::Result<Vec<(u64, u64)>> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    Ok(parse(&smaps))
}

fn parse(smaps: &str) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut cur: Option<(u64, u64)> = None;
    for line in smaps.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if let Some((s, e)) = cur.take() {
                if flags.split_whitespace().any(|f| f == "um") {
                    match out.last_mut() {
                        Some(last) if last.1 == s => last.1 = e,
                        _ => out.push((s, e)),
                    }
                }
            }
            continue;
        }
        let Some(range) = line.split_whitespace().next() else { continue };
        let Some((s, e)) = range.split_once('-') else { continue };
        if let (Ok(s), Ok(e)) = (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16)) {
            cur = Some((s, e));
        }
    }
    out
}

/// The first part of `[start, end)` not inside `ranges` (sorted, merged).
pub fn uncovered(ranges: &[(u64, u64)], start: u64, end: u64) -> Option<(u64, u64)> {
    let i = ranges.partition_point(|&(_, e)| e <= start);
    match ranges.get(i) {
        Some(&(s, e)) if s <= start && end <= e => None,
        Some(&(s, e)) if s <= start => Some((e, end)),
        Some(&(s, _)) => Some((start, s.min(end))),
        None => Some((start, end)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_cover() {
        let smaps = "\
7f0000000000-7f0000002000 rw-p 00000000 00:00 0
Size:                  8 kB
VmFlags: rd wr mr mw me ac um
7f0000002000-7f0000004000 r--p 00000000 00:00 0
VmFlags: rd mr mw me ac um
7f0000006000-7f0000007000 rw-p 00000000 00:00 0
VmFlags: rd wr mr mw me ac
";
        let r = parse(smaps);
        assert_eq!(r, [(0x7f00_0000_0000, 0x7f00_0000_4000)]);
        assert_eq!(uncovered(&r, 0x7f00_0000_1000, 0x7f00_0000_4000), None);
        assert_eq!(uncovered(&r, 0x7f00_0000_3000, 0x7f00_0000_7000), Some((0x7f00_0000_4000, 0x7f00_0000_7000)));
        assert_eq!(uncovered(&r, 0x7e00_0000_0000, 0x7f00_0000_1000), Some((0x7e00_0000_0000, 0x7f00_0000_0000)));
        assert_eq!(uncovered(&r, 0x7f00_0000_6000, 0x7f00_0000_7000), Some((0x7f00_0000_6000, 0x7f00_0000_7000)));
    }
}
