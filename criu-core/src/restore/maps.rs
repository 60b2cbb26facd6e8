//! Reading a process's current mappings from `/proc/PID/maps`.
//!
//! Used to find holes (for the premap area and the blob) and to locate the
//! running `[vdso]`/`[vvar]`/`[vvar_vclock]` areas.

use super::error::{RestoreError, Result};

/// One line of `/proc/PID/maps`: `[start, end)` and the name column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapRange {
    pub start: u64,
    pub end: u64,
    pub name: String,
}

/// Parses the text of a maps file.
pub fn parse_maps(text: &str) -> Option<Vec<MapRange>> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut cols = line.splitn(6, ' ');
            let range = cols.next()?;
            let (s, e) = range.split_once('-')?;
            let name = cols.nth(4).unwrap_or("").trim_start().to_string();
            Some(MapRange {
                start: u64::from_str_radix(s, 16).ok()?,
                end: u64::from_str_radix(e, 16).ok()?,
                name,
            })
        })
        .collect()
}

/// Reads `/proc/self/maps` (pass `None`) or `/proc/PID/maps`.
pub fn read_maps(pid: Option<i32>) -> Result<Vec<MapRange>> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/maps"),
        None => "/proc/self/maps".to_string(),
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|source| RestoreError::ImageIo { file: path.clone().into(), source })?;
    parse_maps(&text).ok_or_else(|| RestoreError::bad(path, "unparsable maps line"))
}

/// The running special areas a restored task must move into place.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpecialAreas {
    pub vdso: Option<(u64, u64)>,
    pub vvar: Option<(u64, u64)>,
    pub vvar_vclock: Option<(u64, u64)>,
}

/// Finds `[vdso]`, `[vvar]` and `[vvar_vclock]` in a maps listing.
pub fn special_areas(maps: &[MapRange]) -> SpecialAreas {
    let find = |n: &str| maps.iter().find(|m| m.name == n).map(|m| (m.start, m.end));
    SpecialAreas { vdso: find("[vdso]"), vvar: find("[vvar]"), vvar_vclock: find("[vvar_vclock]") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_named_and_anonymous_lines() {
        let text = "55d0c0000000-55d0c0021000 r--p 00000000 08:01 123 /usr/bin/cat\n\
                    7ffd1000-7ffd3000 rw-p 00000000 00:00 0\n\
                    7fff0000-7fff2000 r--p 00000000 00:00 0                          [vvar]\n";
        let m = parse_maps(text).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].name, "/usr/bin/cat");
        assert_eq!(m[1].name, "");
        assert_eq!((m[2].start, m[2].end), (0x7fff0000, 0x7fff2000));
        assert_eq!(special_areas(&m).vvar, Some((0x7fff0000, 0x7fff2000)));
        assert!(parse_maps("zz-1 r--p").is_none());
    }

    #[test]
    fn own_maps_have_a_vdso() {
        let m = read_maps(None).unwrap();
        assert!(special_areas(&m).vdso.is_some());
    }
}
