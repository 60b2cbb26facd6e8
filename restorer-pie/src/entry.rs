//! Exported entry points: the `.entries` table format.
//!
//! The blob binary (`main.rs`) holds one `#[used] #[link_section =
//! ".entries"]` array of [`Entry`]. The linker script keeps that section,
//! and the packager (`linker::pack`) reads it: each record is a
//! NUL-padded name of [`ENTRY_NAME_LEN`] bytes followed by an 8-byte
//! function pointer (whose `R_X86_64_RELATIVE` addend gives the entry's
//! offset in the image).

/// Bytes reserved for an entry's name (NUL-padded; at most 31 used).
pub const ENTRY_NAME_LEN: usize = 32;

/// The calling convention of every entry: the argument block's address in,
/// a status out (negative errno on failure, by convention).
pub type EntryFn = unsafe extern "C" fn(args: *mut u8) -> i64;

/// One record of the `.entries` table.
#[repr(C)]
pub struct Entry {
    /// The entry's name, NUL-padded.
    pub name: [u8; ENTRY_NAME_LEN],
    /// The entry's code.
    pub func: EntryFn,
}

impl Entry {
    /// An entry that returns to its caller.
    pub const fn new(name: &str, func: EntryFn) -> Self {
        Self { name: pad_name(name), func }
    }

    /// An entry that never returns (e.g. the restore entry, which ends in
    /// `rt_sigreturn`).
    pub const fn noreturn(name: &str, func: unsafe extern "C" fn(args: *mut u8) -> !) -> Self {
        // SAFETY: both are `extern "C"` function pointers taking one pointer
        // argument; a function that never returns never produces the i64
        // the other type promises, so calling it through either is the same.
        let func = unsafe { core::mem::transmute::<unsafe extern "C" fn(*mut u8) -> !, EntryFn>(func) };
        Self { name: pad_name(name), func }
    }
}

/// Copies `name` into a NUL-padded array. Only ever evaluated at compile
/// time (the table is a static), so an over-long name is a build error.
const fn pad_name(name: &str) -> [u8; ENTRY_NAME_LEN] {
    let bytes = name.as_bytes();
    assert!(!bytes.is_empty() && bytes.len() < ENTRY_NAME_LEN, "entry name must be 1..=31 bytes");
    let mut out = [0u8; ENTRY_NAME_LEN];
    let mut i = 0;
    while i < bytes.len() {
        assert!(bytes[i] != 0, "entry name must not contain NUL");
        out[i] = bytes[i];
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    unsafe extern "C" fn nop(_: *mut u8) -> i64 {
        7
    }

    #[test]
    fn names_are_nul_padded() {
        let e = Entry::new("pie_x", nop);
        assert_eq!(&e.name[..6], b"pie_x\0");
        assert!(e.name[5..].iter().all(|&b| b == 0));
        assert_eq!(core::mem::size_of::<Entry>(), ENTRY_NAME_LEN + 8);
    }
}
