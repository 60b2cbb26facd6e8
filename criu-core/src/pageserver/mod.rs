//! The page server: moving page data between hosts over TCP.
//!
//! Two uses: a remote `criu-rs dump --page-server` sends its pages to
//! `criu-rs page-server`, which writes `pagemap-PID.img`/`pages-N.img`
//! ([`client::PageSink`] → [`server::Session`] with an images directory);
//! and post-copy migration, where the destination's lazy-pages daemon asks
//! the source for pages as faults arrive ([`client::PageClient`] → a server
//! backed by a [`store::PageStore`]: the images of a directory, or memory the
//! dumping process kept).
//!
//! # Protocol: CRIU's
//!
//! The wire format is CRIU's (`page_server_iov`), so either side may be
//! CRIU 4.x: `criu dump --page-server` to `criu-rs page-server`,
//! `criu-rs dump --page-server` to `criu page-server`, and the lazy-pages
//! daemon of one fetching from the `dump --lazy-pages` of the other. There
//! is no hello, no version and no magic; little-endian on x86_64.
//!
//! ```text
//!  request, 32 bytes (also the header of a GET's answer)
//!  +----------------------+-----------+---------------+------------+------------+
//!  | cmd u32              | padding   | nr_pages u64  | vaddr u64  | dst_id u64 |
//!  | flags << 16 | code   | 4 bytes   |               |            |            |
//!  +----------------------+-----------+---------------+------------+------------+
//!  dst_id: an image, id << 8 | type (1 pagemap-ID.img, 2 pagemap-shmem-ID.img;
//!          older CRIUs' type numbers are read too); GET: the bare pid
//!
//!  code   1 ADD      nr pages at vaddr, PRESENT; the pages follow
//!         2 HOLE     nr pages at vaddr in the parent (PARENT)
//!         3 OPEN     start the image dst_id (pages-N.img, N the server's
//!                    numbering from 0x10001); no answer
//!         4 OPEN2    as OPEN; answer: 1 byte, 1 if the server's images
//!                    directory has a parent holding that image
//!         5 PARENT   answer: i32, whether the parent holds image dst_id
//!         6 ADD_F    one pagemap entry with `flags`; with PRESENT the
//!                    nr*4096 bytes follow. An image's entries come in
//!                    address order, after its OPEN (one open at a time)
//!         7 GET      nr pages at vaddr of pid dst_id; answer: ADD_F header
//!                    (flags PRESENT, 1..=nr pages: as many as the server has
//!                    in one run from vaddr) and the pages
//!    0x1023 CLOSE    end of session; answer: i32 status, 0 when all was
//!                    written. 0x1024 FORCE_CLOSE: the same
//! ```
//!
//! Nothing else is answered: a server that fails (a GET of pages it does
//! not have, a malformed request, a write error) closes the connection, and
//! the client sees it at its next answer or write. A session that received
//! pages and ends without CLOSE is a failed dump, not a set of images.

pub mod client;
pub mod proto;
pub mod server;
pub mod store;

pub use proto::PageServerError;
