//! What the tasks of a tree share, created once by criu-rs before the root
//! is forked and inherited by every task (fork copies the fd table):
//!
//! - every open file description of the tree (so a pipe between two tasks
//!   is one pipe with its queued bytes, and a description two tasks hold
//!   keeps one offset); each task then puts the ones it uses at their fd
//!   numbers ([`super::fds::install_fds`]);
//! - every shmem object: shared anonymous memory (`MAP_SHARED|MAP_ANONYMOUS`)
//!   and every memfd inode of `memfd.img`, filled from its
//!   `pagemap-shmem-SHMID.img`, as long as the images say or its furthest
//!   mapping reaches (`pgoff` + length, over every task), kept as an fd;
//!   each task's blob maps it where the object was, at the dumped offset,
//!   so all of them see one object again. Shared anonymous memory is made
//!   the way the kernel makes it (a shared anonymous mapping, opened through
//!   `/proc/self/map_files`) so that it still shows as `/dev/zero
//!   (deleted)` (CRIU 4.x writes it as a memfd inode named `/dev/zero`);
//!   a memfd is `memfd_create`d with its name, owner, mode and seals.

use super::error::{RestoreError, Result, SysContext};
use super::fds::{fd_floor, move_above};
use crate::files::fdtable::open_descs_with;
use super::load::{load_memfd_inodes, read_pagemap};
use super::plan::{DescPlan, TaskPlan, VmaKind, VmaPlan};
use crate::images::{pb, ImageDir, ImageKind};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use rustix::fs::{Mode, OFlags};
use rustix::mm::{MapFlags, ProtFlags};
use std::collections::BTreeMap;

/// The objects criu-rs holds for the tasks while it forks them.
#[derive(Debug)]
pub struct SharedObjects {
    /// Every file description of the tree by file id.
    pub descs: BTreeMap<u32, OwnedFd>,
    /// Every shmem object (shared anonymous memory, memfds) by shmid.
    pub shmem: BTreeMap<u64, OwnedFd>,
    /// The shmid of every memfd inode, by inode id (`memfd_inode_entry`).
    pub memfd_shmids: BTreeMap<u64, u64>,
    /// What the file kinds left for when the tree is about to run and runs
    /// (TCP connections out of repair mode, the network lock lifted).
    pub later: crate::files::Later,
}

impl SharedObjects {
    /// The shmem object of memfd inode `inode_id`.
    pub fn memfd(&self, inode_id: u64) -> Option<&OwnedFd> {
        self.shmem.get(self.memfd_shmids.get(&inode_id)?)
    }
}

/// The lowest fd number above every task's fd table.
pub fn tree_floor(tasks: &[&TaskPlan]) -> RawFd {
    tasks.iter().map(|t| fd_floor(&t.fds)).max().unwrap_or(3)
}

/// Creates every description and shmem object of `tasks` above their fd
/// tables.
#[tracing::instrument(level = "debug", skip_all)]
pub fn create(images: &ImageDir, tasks: &[&TaskPlan]) -> Result<SharedObjects> {
    let floor = tree_floor(tasks);
    let mut all: BTreeMap<u32, DescPlan> = BTreeMap::new();
    for t in tasks.iter() {
        for (id, d) in &t.descs {
            all.entry(*id).or_insert_with(|| d.clone());
        }
    }
    let inodes: BTreeMap<u64, pb::MemfdInodeEntry> =
        load_memfd_inodes(images)?.into_values().map(|m| (m.shmid.unwrap_or_default() as u64, m)).collect();
    let memfd_shmids: BTreeMap<u64, u64> = inodes.values().map(|m| (m.inode_id.unwrap_or_default(), m.shmid.unwrap_or_default() as u64)).collect();
    let mut sizes = shmem_sizes(tasks);
    for (&shmid, inode) in &inodes {
        let s = sizes.entry(shmid).or_default();
        *s = match inode.name.as_deref() {
            Some(ANON_SHMEM_NAME) => (*s).max(inode.size.unwrap_or_default()),
            // A memfd keeps its size: its areas may reach past the end.
            _ => inode.size.unwrap_or_default(),
        };
    }
    let mut shmem = BTreeMap::new();
    for (shmid, size) in sizes {
        let obj = match inodes.get(&shmid) {
            Some(inode) if inode.name.as_deref() != Some(ANON_SHMEM_NAME) => memfd_object(images, inode, size)?,
            _ => anon_object(images, shmid, size)?,
        };
        shmem.insert(shmid, move_above(obj, floor)?);
    }
    // After the objects: a memfd's descriptions are reopenings of its object.
    let memfds: BTreeMap<u64, BorrowedFd<'_>> =
        memfd_shmids.iter().filter_map(|(&inode, shmid)| Some((inode, shmem.get(shmid)?.as_fd()))).collect();
    let (descs, later) = open_descs_with(&all, floor, &memfds)?;
    drop(memfds);
    Ok(SharedObjects { descs, shmem, memfd_shmids, later })
}

/// The name CRIU gives a memfd inode that is shared anonymous memory (the
/// shmem file behind `MAP_SHARED|MAP_ANONYMOUS`, `/dev/zero (deleted)` in
/// `/proc/PID/maps`).
const ANON_SHMEM_NAME: &str = "/dev/zero";

/// Every shmem object mapped by `tasks` with the size its mappings need
/// (or what the images say, for memfd-format shared anonymous memory).
fn shmem_sizes(tasks: &[&TaskPlan]) -> BTreeMap<u64, u64> {
    let mut sizes: BTreeMap<u64, u64> = BTreeMap::new();
    for v in tasks.iter().flat_map(|t| &t.vmas) {
        if let VmaKind::Shmem { shmid, size } = v.kind {
            let s = sizes.entry(shmid).or_default();
            *s = (*s).max(size).max(v.pgoff.saturating_add(v.len()));
        }
    }
    sizes
}

/// Shared anonymous object `shmid` of `size` bytes with its dumped pages,
/// as an fd on its shmem file.
fn anon_object(images: &ImageDir, shmid: u64, size: u64) -> Result<OwnedFd> {
    // SAFETY: a fresh mapping chosen by the kernel; unmapped below.
    let mem = unsafe {
        rustix::mm::mmap_anonymous(std::ptr::null_mut(), size as usize, ProtFlags::READ | ProtFlags::WRITE, MapFlags::SHARED)
    }
    .sys(|| format!("creating shared memory object {shmid:#x} ({size} bytes)"))?;
    let result = fill_object(images, shmid, mem as u64, size).and_then(|()| {
        let path = format!("/proc/self/map_files/{:x}-{:x}", mem as u64, mem as u64 + size);
        rustix::fs::open(&path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).sys(|| format!("opening {path} (shared memory {shmid:#x})"))
    });
    // SAFETY: `mem` is the mapping made above; nothing refers to it now.
    let _ = unsafe { rustix::mm::munmap(mem, size as usize) };
    result
}

/// `F_SEAL_*` a memfd may carry when restored: seals that do not stop the
/// tasks' own mappings from being made. `F_SEAL_WRITE` is one: a memfd
/// sealed so has no writable shared mapping (the kernel refuses the seal
/// while one exists, and such a mapping after it), and read-only or
/// private ones can be made after the seal. `F_SEAL_FUTURE_WRITE` is not:
/// writable shared mappings made before it stay, and could not be made
/// again after it.
const SEALS_RESTORED: u32 = (libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE) as u32;

/// Memfd inode `inode` (`size` bytes) with its dumped pages:
/// `memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING)`, its owner, mode
/// and seals.
fn memfd_object(images: &ImageDir, inode: &pb::MemfdInodeEntry, size: u64) -> Result<OwnedFd> {
    let name = inode.name.clone().unwrap_or_default();
    let shmid = inode.shmid.unwrap_or_default() as u64;
    let seals = inode.seals.unwrap_or_default();
    let memfd_path = || images.image_path(ImageKind::MemfdInode, 0);
    if seals & !SEALS_RESTORED != 0 || inode.hugetlb_flag.unwrap_or(0) != 0 {
        let what = format!("memfd {name:?}: seals {seals:#x} or huge pages {:#x}", inode.hugetlb_flag.unwrap_or(0));
        return Err(RestoreError::Unsupported { file: memfd_path(), what });
    }
    let fd = rustix::fs::memfd_create(name.as_str(), rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING)
        .sys(|| format!("memfd_create({name:?})"))?;
    rustix::fs::ftruncate(&fd, size).sys(|| format!("ftruncate(memfd {name:?}, {size})"))?;
    // SAFETY: a fresh shared mapping of our own memfd; unmapped below.
    let mem = unsafe { rustix::mm::mmap(std::ptr::null_mut(), size as usize, ProtFlags::READ | ProtFlags::WRITE, MapFlags::SHARED, &fd, 0) }
        .sys(|| format!("mapping memfd {name:?}"))?;
    let filled = fill_object(images, shmid, mem as u64, size);
    // SAFETY: `mem` is the mapping made above; nothing refers to it now.
    let _ = unsafe { rustix::mm::munmap(mem, size as usize) };
    filled?;
    if let Some(mode) = inode.mode {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o7777)).sys(|| format!("fchmod(memfd {name:?})"))?;
    }
    let (uid, gid) = (inode.uid.unwrap_or_default(), inode.gid.unwrap_or_default());
    let (owner, group) = (rustix::fs::Uid::from_raw(uid), rustix::fs::Gid::from_raw(gid));
    rustix::fs::fchown(&fd, Some(owner), Some(group)).sys(|| format!("fchown(memfd {name:?}, {uid}, {gid})"))?;
    if seals != 0 {
        rustix::fs::fcntl_add_seals(&fd, rustix::fs::SealFlags::from_bits_retain(seals)).sys(|| format!("F_ADD_SEALS(memfd {name:?}, {seals:#x})"))?;
    }
    Ok(fd)
}

/// Fills the object mapped at `mem` (`size` bytes) from
/// `pagemap-shmem-SHMID.img`, if any.
fn fill_object(images: &ImageDir, shmid: u64, mem: u64, size: u64) -> Result<()> {
    if !images.exists(ImageKind::ShmemPagemap, shmid) {
        return Ok(());
    }
    // The object as one area from offset 0: its pagemap holds offsets. A
    // memfd's last page may be partly past its size; the mapping has it all.
    let end = size.next_multiple_of(super::plan::PAGE_SIZE);
    let whole = VmaPlan { start: 0, end, pgoff: 0, prot: 0, flags: 0, madv: 0, lock_on_fault: false, kind: VmaKind::Anon };
    let (pages, lazy) = read_pagemap(images, ImageKind::ShmemPagemap, shmid, std::slice::from_ref(&whole), 0, None)?;
    if let Some(l) = lazy.iter().find(|l| !l.present) {
        let what = format!("lazy pages at offset {:#x} of shared memory object {shmid:#x} (only private memory is served lazily)", l.vaddr);
        return Err(RestoreError::Unsupported { file: images.image_path(ImageKind::ShmemPagemap, shmid), what });
    }
    if pages.runs.is_empty() {
        return Ok(());
    }
    let file = rustix::fs::open(&pages.path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| RestoreError::ImageIo { file: pages.path.clone(), source: e.into() })?;
    for r in &pages.runs {
        // SAFETY: the run lies inside the object (checked against `whole`
        // by read_pagemap) and the mapping is ours.
        let buf = unsafe { std::slice::from_raw_parts_mut((mem + r.vaddr) as *mut u8, r.len() as usize) };
        read_exact_at(&file, buf, r.file_off).map_err(|e| RestoreError::ImageIo { file: pages.path.clone(), source: e.into() })?;
    }
    Ok(())
}

/// `pread` until `buf` is full.
pub(super) fn read_exact_at(fd: &OwnedFd, mut buf: &mut [u8], mut off: u64) -> std::result::Result<(), rustix::io::Errno> {
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
