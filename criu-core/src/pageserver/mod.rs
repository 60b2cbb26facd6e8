//! The page server: moving page data between hosts over TCP.
//!
//! Two uses: a remote `criu-rs dump --page-server` sends its pages to
//! `criu-rs page-server`, which writes `pagemap-PID.img`/`pages-N.img`
//! ([`client::PageSink`], or pipelined [`stream_sink::StreamSink`] →
//! [`server::Session`] with an images directory);
//! and post-copy migration, where the destination's lazy-pages daemon asks
//! the source for pages as faults arrive ([`client::PageClient`] → a server
//! backed by a [`store::PageStore`]: the images of a directory, or memory the
//! dumping process kept, [`store::MemStore`]).
//!
//! # Protocol (version 2)
//!
//! All integers little-endian. The client speaks first; every request gets
//! exactly one reply, in order.
//!
//! ```text
//!  hello, 16 bytes, client -> server, then server -> client
//!  +-------------------+-------------+-------------+-------------+
//!  | magic 0x53505243  | version u32 | role u32    | reserved 0  |
//!  | "CRPS"            | (2)         | 1 put 2 get |             |
//!  +-------------------+-------------+-------------+-------------+
//!  The server answers with its own hello; a version it does not speak gets
//!  a reply {status VERSION} instead, and the connection closes.
//!
//!  request, 32 bytes                                  reply, 16 bytes
//!  +--------+--------+--------+--------+              +--------+--------+---------+
//!  | cmd    | flags  | pid    | id     |              | status | 0      | len u64 |
//!  +--------+--------+--------+--------+              +--------+--------+---------+
//!  | vaddr u64       | nr_pages u64    |              then `len` bytes of pages
//!  +-----------------+-----------------+
//!
//!  cmd   1 OPEN  pid id               start pagemap-PID.img and pages-ID.img (put role);
//!                                     the dump picks the id (a tree's tasks and its
//!                                     shared memory share one numbering, so the
//!                                     server's images and the local ones never
//!                                     collide); id 0, or a pid or id already opened
//!                                     in the session, is refused. `id` is 0 in every
//!                                     other request (else a protocol error)
//!        2 PUT   pid vaddr nr flags   one pagemap entry (flags: PRESENT, LAZY...);
//!                                     with PRESENT, nr*4096 bytes follow the request;
//!                                     flag bit 31 (PUT_CONTINUES): the entry goes on
//!                                     the previous PUT's (same flags, adjacent), so a
//!                                     run above MAX_PAGES stays one pagemap entry
//!        3 CLOSE pid                  finish that pid's images
//!        4 GET   pid vaddr nr         reply carries nr*4096 bytes (get role)
//!        5 FINISH                     end of session; the server closes
//!  status 0 OK, 1 UNKNOWN_PID, 2 NO_DATA, 3 BAD_REQUEST, 4 TOO_LARGE, 5 IO, 6 VERSION
//! ```
//!
//! Bounds: at most [`proto::MAX_PAGES`] pages per PUT or GET; a reply's `len`
//! must be what was asked for. Anything else is a [`PageServerError`].

pub mod client;
pub mod proto;
pub mod server;
pub mod store;
pub mod stream_sink;

pub use proto::PageServerError;
