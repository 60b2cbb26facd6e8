//! Looking up symbols in a vDSO image (its dynamic symbol table).

use object::{Object, ObjectSegment, ObjectSymbol};

/// Offset of dynamic symbol `name` from the start of the vDSO image
/// `image` (as mapped: the lowest loaded address is offset 0).
pub fn symbol_offset(image: &[u8], name: &[u8]) -> Option<u64> {
    let file = object::File::parse(image).ok()?;
    let base = file.segments().map(|s| s.address()).min().unwrap_or(0);
    file.dynamic_symbols().find(|s| s.name_bytes().ok() == Some(name)).map(|s| s.address() - base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_clock_gettime_in_our_own_vdso() {
        let maps = crate::restore::maps::read_maps(None).unwrap();
        let (s, e) = crate::restore::maps::special_areas(&maps).vdso.unwrap();
        // SAFETY: the [vdso] mapping of this process is readable for its whole length.
        let image = unsafe { std::slice::from_raw_parts(s as *const u8, (e - s) as usize) };
        let off = symbol_offset(image, b"__vdso_clock_gettime").unwrap();
        assert!(off > 0 && off < e - s);
        assert!(symbol_offset(image, b"no_such_symbol").is_none());
    }
}
