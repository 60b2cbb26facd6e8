//! What the tasks of a tree share, created once by criu-rs before the root
//! is forked and inherited by every task (fork copies the fd table):
//!
//! - every open file description of the tree (so a pipe between two tasks
//!   is one pipe with its queued bytes, and a description two tasks hold
//!   keeps one offset); each task then puts the ones it uses at their fd
//!   numbers ([`super::fds::install_fds`]);
//! - every shared anonymous memory object (`MAP_SHARED|MAP_ANONYMOUS`),
//!   as long as its furthest mapping reaches (`pgoff` + length, over every
//!   task), filled from its `pagemap-shmem-SHMID.img`, kept as an fd on its
//!   shmem file (`/proc/self/map_files`); each task's blob maps that file
//!   where the object was, at the dumped offset, so all of them see one
//!   object again (and it still shows as `/dev/zero (deleted)`).

use super::error::{RestoreError, Result, SysContext};
use super::fds::{fd_floor, move_above, open_descs};
use super::load::read_pagemap;
use super::plan::{DescPlan, TaskPlan, VmaKind, VmaPlan};
use crate::images::{ImageDir, ImageKind};
use rustix::fd::{OwnedFd, RawFd};
use rustix::fs::{Mode, OFlags};
use rustix::mm::{MapFlags, ProtFlags};
use std::collections::BTreeMap;

/// The objects criu-rs holds for the tasks while it forks them.
#[derive(Debug)]
pub struct SharedObjects {
    /// Every file description of the tree by file id.
    pub descs: BTreeMap<u32, OwnedFd>,
    /// Every shared anonymous memory object by shmid.
    pub shmem: BTreeMap<u64, OwnedFd>,
}

/// The lowest fd number above every task's fd table.
pub fn tree_floor(tasks: &[&TaskPlan]) -> RawFd {
    tasks.iter().map(|t| fd_floor(&t.fds)).max().unwrap_or(3)
}

/// Creates every description and shared memory object of `tasks` above
/// their fd tables.
pub fn create(images: &ImageDir, tasks: &[&TaskPlan]) -> Result<SharedObjects> {
    let floor = tree_floor(tasks);
    let mut all: BTreeMap<u32, DescPlan> = BTreeMap::new();
    for t in tasks.iter() {
        for (id, d) in &t.descs {
            all.entry(*id).or_insert_with(|| d.clone());
        }
    }
    let descs = open_descs(&all, floor)?;
    let mut shmem = BTreeMap::new();
    for (shmid, size) in shmem_sizes(tasks) {
        shmem.insert(shmid, shmem_object(images, shmid, size, floor)?);
    }
    Ok(SharedObjects { descs, shmem })
}

/// Every shared anonymous object of `tasks` with its size: what the images
/// say (a memfd inode's size), or else as far as its mappings reach.
fn shmem_sizes(tasks: &[&TaskPlan]) -> BTreeMap<u64, u64> {
    let mut sizes: BTreeMap<u64, u64> = BTreeMap::new();
    for v in tasks.iter().flat_map(|t| &t.vmas) {
        if let VmaKind::SharedAnon { shmid, size } = v.kind {
            let s = sizes.entry(shmid).or_default();
            *s = (*s).max(size).max(v.pgoff.saturating_add(v.len()));
        }
    }
    sizes
}

/// One shared anonymous object of `size` bytes with its dumped pages, as an
/// fd on its shmem file (at or above `floor`).
fn shmem_object(images: &ImageDir, shmid: u64, size: u64, floor: RawFd) -> Result<OwnedFd> {
    // SAFETY: a fresh mapping chosen by the kernel; unmapped below.
    let mem = unsafe {
        rustix::mm::mmap_anonymous(std::ptr::null_mut(), size as usize, ProtFlags::READ | ProtFlags::WRITE, MapFlags::SHARED)
    }
    .sys(|| format!("creating shared memory object {shmid:#x} ({size} bytes)"))?;
    let result = fill_and_open(images, shmid, mem as u64, size);
    // SAFETY: `mem` is the mapping made above; nothing refers to it now.
    let _ = unsafe { rustix::mm::munmap(mem, size as usize) };
    move_above(result?, floor)
}

/// Fills the mapping at `mem` from `pagemap-shmem-SHMID.img` (if any) and
/// opens its shmem file through `/proc/self/map_files`.
fn fill_and_open(images: &ImageDir, shmid: u64, mem: u64, size: u64) -> Result<OwnedFd> {
    if images.exists(ImageKind::ShmemPagemap, shmid) {
        // The object as one area from offset 0: its pagemap holds offsets.
        let whole = VmaPlan { start: 0, end: size, pgoff: 0, prot: 0, flags: 0, madv: 0, kind: VmaKind::Anon };
        let (pages, lazy) = read_pagemap(images, ImageKind::ShmemPagemap, shmid, std::slice::from_ref(&whole), 0, None)?;
        if let Some(l) = lazy.iter().find(|l| !l.present) {
            let what = format!("lazy pages at offset {:#x} of shared anonymous object {shmid:#x} (only private memory is served lazily)", l.vaddr);
            return Err(RestoreError::Unsupported { file: images.image_path(ImageKind::ShmemPagemap, shmid), what });
        }
        if !pages.runs.is_empty() {
            let file = rustix::fs::open(&pages.path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| RestoreError::ImageIo { file: pages.path.clone(), source: e.into() })?;
            for r in &pages.runs {
                // SAFETY: the run lies inside the object (checked against
                // `whole` by read_pagemap) and the mapping is ours.
                let buf = unsafe { std::slice::from_raw_parts_mut((mem + r.vaddr) as *mut u8, r.len() as usize) };
                read_exact_at(&file, buf, r.file_off).map_err(|e| RestoreError::ImageIo { file: pages.path.clone(), source: e.into() })?;
            }
        }
    }
    let path = format!("/proc/self/map_files/{:x}-{:x}", mem, mem + size);
    rustix::fs::open(&path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).sys(|| format!("opening {path} (shared memory {shmid:#x})"))
}

/// `pread` until `buf` is full.
fn read_exact_at(fd: &OwnedFd, mut buf: &mut [u8], mut off: u64) -> std::result::Result<(), rustix::io::Errno> {
    while !buf.is_empty() {
        match rustix::io::pread(fd, &mut *buf, off)? {
            0 => return Err(rustix::io::Errno::NODATA),
            n => {
                buf = &mut buf[n..];
                off += n as u64;
            }
        }
    }
    Ok(())
}
