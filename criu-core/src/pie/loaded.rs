//! The blob mapped and runnable in the current process (tests, benchmarks).

use super::{relocate_into, EntryPoint, Package, PieError, Prot, PAGE_SIZE};
use rustix::mm::{mmap_anonymous, mprotect, munmap, MapFlags, MprotectFlags, ProtFlags};
use std::ffi::c_void;

/// The blob mapped at a fixed address of this process; unmapped on drop.
#[derive(Debug)]
pub struct Loaded {
    base: usize,
    len: usize,
    entries: Vec<EntryPoint>,
}

impl Loaded {
    /// Maps `pkg` at `addr` (page aligned, currently unmapped:
    /// `MAP_FIXED_NOREPLACE`), relocates it for that address and applies
    /// each segment's protection (pages no segment covers get none).
    pub fn map_at(pkg: &Package, addr: usize) -> Result<Self, PieError> {
        if !(addr as u64).is_multiple_of(PAGE_SIZE) {
            return Err(PieError::Misaligned(addr));
        }
        let len = usize::try_from(pkg.mem_size()).map_err(|_| PieError::AddressOverflow { base: addr, len: pkg.mem_size() })?;
        let end = addr.checked_add(len).ok_or(PieError::AddressOverflow { base: addr, len: pkg.mem_size() })?;
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping, so
        // no memory anyone uses is touched; the new mapping is ours alone.
        let got = unsafe {
            mmap_anonymous(
                addr as *mut c_void,
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::FIXED_NOREPLACE,
            )
        };
        let got = match got {
            Ok(p) => p as usize,
            Err(rustix::io::Errno::EXIST) => return Err(PieError::AddressInUse { addr, end }),
            Err(source) => return Err(PieError::Map { addr, len, source }),
        };
        // From here on, Drop unmaps whatever was mapped.
        let loaded = Self { base: got, len, entries: pkg.entries().to_vec() };
        if got != addr {
            // A kernel without MAP_FIXED_NOREPLACE took the address as a hint.
            return Err(PieError::Misplaced { want: addr, got });
        }
        // SAFETY: [addr, addr + len) is the fresh read-write mapping made
        // above, owned by `loaded`, and nothing else refers to it yet.
        let mem = unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len) };
        relocate_into(pkg, mem, addr)?;
        let mut covered = 0u64;
        for seg in pkg.segments() {
            loaded.protect(covered, seg.offset - covered, Prot(0))?;
            loaded.protect(seg.offset, seg.size, seg.prot)?;
            covered = seg.offset + seg.size;
        }
        loaded.protect(covered, pkg.mem_size() - covered, Prot(0))?;
        Ok(loaded)
    }

    /// Maps `pkg` wherever the kernel finds room (benchmarks, tests).
    pub fn map_anywhere(pkg: &Package) -> Result<Self, PieError> {
        let len = usize::try_from(pkg.mem_size()).map_err(|_| PieError::AddressOverflow { base: 0, len: pkg.mem_size() })?;
        // SAFETY: a fresh inaccessible mapping at a kernel-chosen address,
        // released at once: it only finds a free range.
        let addr = unsafe {
            let p = mmap_anonymous(std::ptr::null_mut(), len, ProtFlags::empty(), MapFlags::PRIVATE)
                .map_err(|source| PieError::Map { addr: 0, len, source })?;
            munmap(p, len).map_err(|source| PieError::Map { addr: p as usize, len, source })?;
            p as usize
        };
        Self::map_at(pkg, addr)
    }

    /// `mprotect(base + offset, len, prot)`; a no-op for `len == 0`.
    fn protect(&self, offset: u64, len: u64, prot: Prot) -> Result<(), PieError> {
        if len == 0 {
            return Ok(());
        }
        let mut flags = MprotectFlags::empty();
        for (bit, flag) in [(Prot::READ, MprotectFlags::READ), (Prot::WRITE, MprotectFlags::WRITE), (Prot::EXEC, MprotectFlags::EXEC)] {
            if prot.0 & bit != 0 {
                flags |= flag;
            }
        }
        // Offsets come from a validated package: inside [0, len).
        let (addr, len) = (self.base + offset as usize, len as usize);
        // SAFETY: the range lies inside our own mapping.
        unsafe { mprotect(addr as *mut c_void, len, flags) }.map_err(|source| PieError::Protect { addr, len, prot, source })
    }

    /// The load address.
    pub fn base(&self) -> usize {
        self.base
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: a package spans at least one page.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The absolute address of entry `name`.
    pub fn entry(&self, name: &str) -> Option<usize> {
        self.entries.iter().find(|e| e.name == name).map(|e| self.base + e.offset as usize)
    }

    /// Calls entry `name` with the argument block `args` and returns its
    /// status.
    ///
    /// # Safety
    /// `args` must point to the (aligned, writable) `abi` struct that entry
    /// expects, and the entry must be one that returns: it runs on this
    /// thread's stack with full access to this process.
    pub unsafe fn call(&self, name: &str, args: *mut u8) -> Result<i64, PieError> {
        let addr = self.entry(name).ok_or_else(|| PieError::NoSuchEntry(name.to_owned()))?;
        // SAFETY: the package validated that the entry lies in an executable
        // segment of this mapping, and every blob entry has this signature.
        let func = unsafe { std::mem::transmute::<usize, unsafe extern "C" fn(*mut u8) -> i64>(addr) };
        // SAFETY: the caller vouches for `args` and the entry's behaviour.
        Ok(unsafe { func(args) })
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours; no reference into it outlives self
        // (entries are only reachable through &self).
        if let Err(e) = unsafe { munmap(self.base as *mut c_void, self.len) } {
            tracing::warn!("unmapping the blob at {:#x}: {e}", self.base);
        }
    }
}
