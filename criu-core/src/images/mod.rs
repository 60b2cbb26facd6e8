//! CRIU-compatible image files.
//!
//! An image directory holds one file per image kind and id (see
//! [`ImageKind`]). Every file but `pages-N.img` has the same framing; all
//! integers are little-endian:
//!
//! ```text
//!  regular image (core-1234.img, mm-1234.img, files.img, ...)
//!  +-----------------+-----------------+---------+-----------+---------+-----------+--
//!  | IMG_COMMON      | per-type magic  | len u32 | protobuf  | len u32 | protobuf  | ...
//!  | 0x54564319      | e.g. 0x55053847 |         | len bytes |         | len bytes |
//!  +-----------------+-----------------+---------+-----------+---------+-----------+--
//!
//!  service image (stats-dump): IMG_SERVICE 0x55105940 instead of IMG_COMMON
//!  inventory.img:                  a single magic word 0x58313116, then entries
//!
//!  entry with a raw payload (pipes-data.img, ghost-file-N.img):
//!  | len | pipe_data_entry{pipe_id, bytes=N} | N raw bytes | len | ... |
//!
//!  pagemap-PID.img                          pages-<pages_id>.img (no header)
//!  | hdr | pagemap_head{pages_id} |          +---------+---------+--
//!  | pagemap_entry{vaddr, nr_pages, flags} | -> | page 0  | page 1  | ...
//!  | pagemap_entry ...                     |    +---------+---------+--
//!  (entries with PRESENT take their pages from the pages file, in order)
//! ```
//!
//! The protobuf messages are in [`pb`] (compiled from `proto/`, whose wire
//! layout matches CRIU's `images/*.proto`). proto2 `required` fields are
//! `Option`s there and checked by [`Validate`]: readers reject entries
//! missing one, writers refuse to write them.
//!
//! A dump writes every image through [`ImageDir`] and writes `inventory.img`
//! last; restore opens the directory with [`ImageDir::open`], which fails
//! without a valid inventory. File writers write under a temporary name and
//! rename on [`ImageWriter::finish`].
//!
//! # A complete image set, as current CRIU writes it
//!
//! 1. [`ImageDir::create`] (drops any old `inventory.img`).
//! 2. Per process `PID`: `ids-PID.img` (`task_kobj_ids_entry`), `core-TID.img`
//!    for every thread (the leader's holds `tc` + `thread_core` +
//!    `thread_info`; other threads' only `thread_core` + `thread_info`),
//!    `mm-PID.img` (`mm_entry`, VMAs inside), `pagemap-PID.img` +
//!    `pages-N.img` (N from a counter starting at 1, one per pagemap),
//!    `fs-PID.img`. Creds, sigactions, timers, rlimits and pending signals
//!    live in the core entries, not in files of their own.
//! 3. Per files id: `fdinfo-FILES_ID.img`; all open files, cwd/root and the
//!    exe/mapped files as `file_entry`s in `files.img`; pipe contents in
//!    `pipes-data.img`; unlinked files in `ghost-file-ID.img` with a
//!    `remap-fpath.img` entry.
//! 4. `pstree.img` (one `pstree_entry` per process, parents first).
//! 5. `stats-dump` (optional), then `inventory.img`
//!    ([`InventoryEntry::for_dump`](pb::InventoryEntry::for_dump)).

mod checks;
pub mod consts;
mod dir;
mod entries;
mod error;
mod kind;
pub mod pb;
mod reader;
mod writer;

pub use checks::{is_guard, pagemap_error, split_at_areas, PAGE_SIZE};
pub use consts::IMG_VERSION;
pub use dir::ImageDir;
pub use entries::Payload;
pub use error::{ImageError, Result};
pub use kind::{Header, ImageKind, IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC, INVENTORY_MAGIC};
pub use pb::Validate;
pub use reader::{ImageReader, MAX_ENTRY_LEN, MAX_RAW_LEN};
pub use writer::ImageWriter;
