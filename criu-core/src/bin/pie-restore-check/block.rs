//! Building a `RestoreArgs` argument block in this process.

use criu_core::abi::{ArgArray, MemRange, RestoreArgs, RESTORE_MAGIC, RESTORE_VERSION};
use std::mem::size_of;

/// An argument block of fixed capacity in its own page-aligned anonymous
/// mapping (it never moves, so addresses inside it can be handed out while
/// it is filled; the blob keeps whole pages).
pub struct Block {
    words: &'static mut [u64],
    used: usize,
}

impl Drop for Block {
    fn drop(&mut self) {
        // SAFETY: unmapping the block's own mapping.
        unsafe { libc::munmap(self.words.as_mut_ptr().cast(), self.words.len() * 8) };
    }
}

impl Block {
    /// A block of `bytes` capacity with a default header.
    pub fn new(bytes: usize) -> Self {
        let len = bytes.next_multiple_of(4096);
        // SAFETY: a fresh anonymous mapping, owned by the Block.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap of the argument block");
        // SAFETY: `len` zeroed bytes, page aligned, ours until Drop.
        let words = unsafe { std::slice::from_raw_parts_mut(p.cast::<u64>(), len / 8) };
        let mut b = Self { words, used: size_of::<RestoreArgs>() };
        let base = b.base();
        *b.header_mut() = RestoreArgs {
            magic: RESTORE_MAGIC,
            version: RESTORE_VERSION,
            header_size: size_of::<RestoreArgs>() as u32,
            total_size: 0,
            log_fd: 2,
            task_size: 0x7fff_ffff_f000,
            page_size: 4096,
            args: MemRange { start: base, len: (b.words.len() * 8) as u64 },
            ..Default::default()
        };
        b
    }

    pub fn base(&self) -> u64 {
        self.words.as_ptr() as u64
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.words.as_mut_ptr().cast()
    }

    pub fn header(&self) -> &RestoreArgs {
        // SAFETY: the block starts with a RestoreArgs and is 8-aligned.
        unsafe { &*self.words.as_ptr().cast::<RestoreArgs>() }
    }

    pub fn header_mut(&mut self) -> &mut RestoreArgs {
        // SAFETY: as above, exclusively borrowed.
        unsafe { &mut *self.words.as_mut_ptr().cast::<RestoreArgs>() }
    }

    /// Reserves `bytes` (8-aligned, optionally `align`-aligned) and returns
    /// the offset.
    pub fn reserve(&mut self, bytes: usize, align: usize) -> usize {
        let base = self.base() as usize;
        let start = (base + self.used).next_multiple_of(align.max(8)) - base;
        let end = start + bytes.next_multiple_of(8);
        assert!(end <= self.words.len() * 8, "argument block too small");
        self.used = end;
        self.header_mut().total_size = end as u64;
        start
    }

    /// Copies `items` into the block.
    pub fn push<T: Copy>(&mut self, items: &[T]) -> ArgArray {
        let bytes = std::mem::size_of_val(items);
        let off = self.reserve(bytes, std::mem::align_of::<T>());
        // SAFETY: `off..off + bytes` was just reserved inside the block;
        // T is a plain #[repr(C)] integer struct.
        unsafe {
            std::ptr::copy_nonoverlapping(items.as_ptr().cast::<u8>(), self.as_mut_ptr().add(off), bytes);
        }
        ArgArray { off: off as u64, count: items.len() as u64 }
    }

    /// Reserves an area and returns it as target addresses.
    pub fn area(&mut self, bytes: usize, align: usize) -> MemRange {
        let off = self.reserve(bytes, align);
        MemRange { start: self.base() + off as u64, len: bytes as u64 }
    }
}
