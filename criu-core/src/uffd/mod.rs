//! userfaultfd over rustix: creating the descriptor, the `UFFDIO_*` ioctls
//! and decoding the messages read from it.
//!
//! A userfaultfd is tied to the memory of the process that created it. A
//! range registered on it in MISSING mode makes every access to a page that
//! is not there yet stop the faulting thread and queue a message; whoever
//! holds the descriptor (possibly another process, it can be passed over a
//! unix socket) answers with [`Uffd::copy`] or [`Uffd::zeropage`], which
//! fill the page and wake the thread. With the non-cooperative features
//! ([`LAZY_FEATURES`]) the holder also learns about `fork`, `mremap`,
//! `madvise(DONTNEED)` and `munmap` of registered memory ([`Event`]).
//!
//! When the last reference to the descriptor is dropped, the kernel
//! unregisters every range: later faults fill with zero pages. Code that
//! serves memory lazily must keep the descriptor open until every page is in
//! (see [`crate::lazy`]).
//!
//! - `ioctl.rs`: the `UFFDIO_*` calls ([`Uffd`]'s methods).
//! - `msg.rs`: the 32-byte `struct uffd_msg` and [`Event`].

mod ioctl;
mod msg;

pub use ioctl::{Copied, Uffd};
pub use msg::{Event, MSG_SIZE};

use linux_raw_sys::general as g;

/// Feature bits of `UFFDIO_API` (`UFFD_FEATURE_*`).
pub mod feature {
    use super::g;
    /// Report `fork` of a registered process: a new descriptor for the child.
    pub const EVENT_FORK: u64 = g::UFFD_FEATURE_EVENT_FORK as u64;
    /// Report `mremap` of registered memory.
    pub const EVENT_REMAP: u64 = g::UFFD_FEATURE_EVENT_REMAP as u64;
    /// Report `madvise(MADV_DONTNEED/REMOVE)` of registered memory.
    pub const EVENT_REMOVE: u64 = g::UFFD_FEATURE_EVENT_REMOVE as u64;
    /// Report `munmap` of registered memory.
    pub const EVENT_UNMAP: u64 = g::UFFD_FEATURE_EVENT_UNMAP as u64;
    /// Raise SIGBUS on a missing page instead of queueing a fault.
    pub const SIGBUS: u64 = g::UFFD_FEATURE_SIGBUS as u64;
    /// Put the faulting thread's id into page-fault messages.
    pub const THREAD_ID: u64 = g::UFFD_FEATURE_THREAD_ID as u64;
    /// Write-protect faults on pages never populated.
    pub const WP_UNPOPULATED: u64 = g::UFFD_FEATURE_WP_UNPOPULATED as u64;
    /// Write-protect resolved by the kernel itself (dirty tracking).
    pub const WP_ASYNC: u64 = g::UFFD_FEATURE_WP_ASYNC as u64;
    /// `UFFDIO_MOVE` is available.
    pub const MOVE: u64 = g::UFFD_FEATURE_MOVE as u64;
}

/// Registration modes (`UFFDIO_REGISTER_MODE_*`).
pub mod mode {
    use super::g;
    /// Faults on pages that are not present.
    pub const MISSING: u64 = g::UFFDIO_REGISTER_MODE_MISSING as u64;
    /// Write-protect faults.
    pub const WP: u64 = g::UFFDIO_REGISTER_MODE_WP as u64;
    /// Minor faults (page in the page cache, not mapped).
    pub const MINOR: u64 = g::UFFDIO_REGISTER_MODE_MINOR as u64;
    /// `UFFDIO_COPY`/`UFFDIO_ZEROPAGE`: do not wake the faulting threads.
    pub const DONTWAKE: u64 = g::UFFDIO_COPY_MODE_DONTWAKE as u64;
    /// `UFFDIO_WRITEPROTECT`: set (with) or clear (without) protection
    /// (`UFFDIO_WRITEPROTECT_MODE_WP`).
    pub const WRITEPROTECT: u64 = 1;
}

/// The features the lazy-pages daemon needs: the four non-cooperative events
/// and the thread id of faulting threads.
pub const LAZY_FEATURES: u64 = feature::EVENT_FORK
    | feature::EVENT_REMAP
    | feature::EVENT_REMOVE
    | feature::EVENT_UNMAP
    | feature::THREAD_ID;
