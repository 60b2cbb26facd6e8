//! An image directory: file naming, creating/opening images by kind and id,
//! raw `pages-N.img` access, and the inventory that marks a dump complete.

use std::fs::File;
use std::path::{Path, PathBuf};

use prost::{Message, Name};

use super::checks::{pagemap_error, split_at_areas};
use super::consts::IMG_VERSION;
use super::error::{ImageError, Result};
use super::kind::ImageKind;
use super::pb::{
    CoreEntry, FileEntry, InventoryEntry, MmEntry, PagemapEntry, PagemapHead, Validate,
};
use super::reader::ImageReader;
use super::writer::ImageWriter;

/// A directory of images. A dump writes `inventory.img` last; restore opens
/// the directory with [`ImageDir::open`], which refuses a set without a valid
/// inventory (an unfinished or failed dump).
#[derive(Debug, Clone)]
pub struct ImageDir {
    path: PathBuf,
    inventory: Option<InventoryEntry>,
}

impl ImageDir {
    /// Prepares `path` for a dump: creates it if needed and removes any old
    /// `inventory.img`, so the set only looks complete once
    /// [`write_inventory`](Self::write_inventory) has run.
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        std::fs::create_dir_all(&path).map_err(|source| ImageError::Io {
            path: path.clone(),
            op: "mkdir",
            source,
        })?;
        let dir = ImageDir {
            path,
            inventory: None,
        };
        let inv = dir.image_path(ImageKind::Inventory, 0);
        match std::fs::remove_file(&inv) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ImageError::Io {
                    path: inv,
                    op: "remove old inventory",
                    source,
                })
            }
        }
        Ok(dir)
    }

    /// Opens a complete image set for restore: `inventory.img` must exist,
    /// decode, and carry image version [`IMG_VERSION`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let mut dir = Self::open_unchecked(path);
        dir.inventory = Some(dir.read_inventory()?);
        Ok(dir)
    }

    /// Uses `path` without looking at the inventory (inspection tools).
    pub fn open_unchecked(path: impl AsRef<Path>) -> Self {
        ImageDir {
            path: path.as_ref().to_path_buf(),
            inventory: None,
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The inventory read by [`open`](Self::open).
    pub fn inventory(&self) -> Option<&InventoryEntry> {
        self.inventory.as_ref()
    }

    /// Path of the image of `kind` for `id` (ignored by kinds without id).
    pub fn image_path(&self, kind: ImageKind, id: u64) -> PathBuf {
        self.path.join(kind.file_name(id))
    }

    /// Whether that image exists.
    pub fn exists(&self, kind: ImageKind, id: u64) -> bool {
        self.image_path(kind, id).exists()
    }

    /// Starts writing an image; call [`ImageWriter::finish`] when done.
    pub fn create_image(&self, kind: ImageKind, id: u64) -> Result<ImageWriter> {
        ImageWriter::create(self.image_path(kind, id), kind)
    }

    /// Opens an image for reading and checks its header.
    pub fn open_image(&self, kind: ImageKind, id: u64) -> Result<ImageReader> {
        ImageReader::open(self.image_path(kind, id), kind)
    }

    /// Writes an image holding the single entry `msg`.
    pub fn write_one<M: Message + Name + Validate>(
        &self,
        kind: ImageKind,
        id: u64,
        msg: &M,
    ) -> Result<()> {
        let mut w = self.create_image(kind, id)?;
        w.write_entry(msg)?;
        w.finish()
    }

    /// Writes an image holding the entries `msgs` (possibly none).
    pub fn write_all<M: Message + Name + Validate>(
        &self,
        kind: ImageKind,
        id: u64,
        msgs: &[M],
    ) -> Result<()> {
        let mut w = self.create_image(kind, id)?;
        w.write_all(msgs)?;
        w.finish()
    }

    /// Reads an image that must hold exactly one entry.
    pub fn read_one<M: Message + Default + Name + Validate>(
        &self,
        kind: ImageKind,
        id: u64,
    ) -> Result<M> {
        self.open_image(kind, id)?.read_one()
    }

    /// Reads all entries of an image.
    pub fn read_all<M: Message + Default + Name + Validate>(
        &self,
        kind: ImageKind,
        id: u64,
    ) -> Result<Vec<M>> {
        self.open_image(kind, id)?.read_all()
    }

    /// Reads `files.img`, checking that each `file_entry` carries exactly the
    /// part its `type` names.
    pub fn read_files(&self) -> Result<Vec<FileEntry>> {
        let mut r = self.open_image(ImageKind::Files, 0)?;
        let mut files = Vec::new();
        loop {
            let offset = r.offset();
            let Some(f) = r.read_entry::<FileEntry>()? else {
                break;
            };
            if let Some(problem) = f.union_error() {
                return Err(ImageError::Invalid {
                    path: r.path().into(),
                    msg: "file_entry",
                    offset,
                    problem,
                });
            }
            files.push(f);
        }
        Ok(files)
    }

    /// Reads `core-<tid>.img` and checks it can be restored on x86-64
    /// (`leader`: the thread group leader, whose core carries the task part).
    pub fn read_core(&self, tid: u64, leader: bool) -> Result<CoreEntry> {
        let core: CoreEntry = self.read_one(ImageKind::Core, tid)?;
        match core.restore_error(leader) {
            None => Ok(core),
            Some(problem) => Err(self.invalid(ImageKind::Core, tid, "core_entry", problem)),
        }
    }

    /// Reads `mm-<pid>.img` and checks its VMA layout.
    pub fn read_mm(&self, pid: u64) -> Result<MmEntry> {
        let mm: MmEntry = self.read_one(ImageKind::Mm, pid)?;
        match mm.layout_error() {
            None => Ok(mm),
            Some(problem) => Err(self.invalid(ImageKind::Mm, pid, "mm_entry", problem)),
        }
    }

    /// Reads `pagemap-<pid>.img`: the pages image id and the entries, checked
    /// against `mm`'s VMAs, each cut to lie inside one VMA (CRIU's may span
    /// adjacent ones).
    pub fn read_pagemap(&self, pid: u64, mm: &MmEntry) -> Result<(u32, Vec<PagemapEntry>)> {
        let mut r = self.open_image(ImageKind::Pagemap, pid)?;
        let head: PagemapHead = r.read_next()?;
        let entries: Vec<PagemapEntry> = r.read_all()?;
        match pagemap_error(&mm.vmas, &entries) {
            None => Ok((head.pages_id(), split_at_areas(&mm.vmas, entries))),
            Some(problem) => Err(self.invalid(ImageKind::Pagemap, pid, "pagemap_entry", problem)),
        }
    }

    fn invalid(&self, kind: ImageKind, id: u64, msg: &'static str, problem: String) -> ImageError {
        ImageError::Inconsistent {
            path: self.image_path(kind, id),
            msg,
            problem,
        }
    }

    /// Starts writing `pages-<id>.img` (raw bytes, no header): use
    /// [`ImageWriter::write_raw`], then [`ImageWriter::finish`].
    pub fn create_pages(&self, id: u64) -> Result<ImageWriter> {
        self.create_image(ImageKind::Pages, id)
    }

    /// Opens `pages-<id>.img` for raw reads (`read_at`, `mmap`, splice...).
    pub fn open_pages(&self, id: u64) -> Result<File> {
        let path = self.image_path(ImageKind::Pages, id);
        File::open(&path).map_err(|source| ImageError::Io {
            path,
            op: "open",
            source,
        })
    }

    /// Writes `inventory.img`; call it last, once every other image is
    /// finished. Refuses an inventory whose `img_version` is not [`IMG_VERSION`].
    pub fn write_inventory(&self, inv: &InventoryEntry) -> Result<()> {
        let path = self.image_path(ImageKind::Inventory, 0);
        check_version(&path, inv)?;
        self.write_one(ImageKind::Inventory, 0, inv)
    }

    /// Reads and checks `inventory.img`.
    pub fn read_inventory(&self) -> Result<InventoryEntry> {
        let inv: InventoryEntry = self.read_one(ImageKind::Inventory, 0)?;
        check_version(&self.image_path(ImageKind::Inventory, 0), &inv)?;
        Ok(inv)
    }
}

fn check_version(path: &Path, inv: &InventoryEntry) -> Result<()> {
    match inv.img_version {
        Some(IMG_VERSION) => Ok(()),
        found => Err(ImageError::Version {
            path: path.into(),
            found: found.unwrap_or(0),
            expected: IMG_VERSION,
        }),
    }
}
