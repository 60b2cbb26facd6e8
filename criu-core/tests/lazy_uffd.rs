//! The userfaultfd wrappers on this process's own memory: API handshake,
//! REGISTER/UNREGISTER, COPY/ZEROPAGE (and EEXIST), a fault served from
//! another thread with its message decoded, WRITEPROTECT faults, MOVE.

use std::sync::atomic::{AtomicU64, Ordering};

use criu_core::uffd::{feature, mode, Copied, Event, Uffd, LAZY_FEATURES};
use rustix::mm::{mmap_anonymous, munmap, MapFlags, ProtFlags};

const PAGE: u64 = 4096;

/// An anonymous private mapping, unmapped on drop.
struct Region {
    base: u64,
    len: u64,
}

impl Region {
    fn new(pages: u64) -> Region {
        let len = pages * PAGE;
        // SAFETY: a fresh anonymous mapping at a kernel-chosen address.
        let p = unsafe { mmap_anonymous(std::ptr::null_mut(), len as usize, ProtFlags::READ | ProtFlags::WRITE, MapFlags::PRIVATE) }
            .expect("mmap");
        Region { base: p as u64, len }
    }

    fn word(&self, page: u64) -> u64 {
        // SAFETY: reading inside the live mapping (a missing page faults to
        // the registered uffd, which the test serves).
        unsafe { std::ptr::read_volatile((self.base + page * PAGE) as *const u64) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping; nothing refers to it afterwards.
        let _ = unsafe { munmap(self.base as *mut _, self.len as usize) };
    }
}

fn page_of(v: u8) -> Vec<u8> {
    vec![v; PAGE as usize]
}

#[test]
fn copy_zeropage_exists_and_unregister() {
    let r = Region::new(4);
    let u = Uffd::create().unwrap();
    assert_eq!(u.features().unwrap(), 0, "no handshake yet");
    let (got, _) = u.api(LAZY_FEATURES).unwrap();
    assert_eq!(got & LAZY_FEATURES, LAZY_FEATURES);
    assert_eq!(u.features().unwrap() & LAZY_FEATURES, LAZY_FEATURES);
    // The handshake happens once.
    assert!(u.api(0).is_err());
    let ioctls = u.register(r.base, r.len, mode::MISSING).unwrap();
    assert_ne!(ioctls, 0);
    assert_eq!(u.copy(r.base, &page_of(0xab), 0).unwrap(), Copied::All);
    assert_eq!(u.copy(r.base, &page_of(0xcd), 0).unwrap(), Copied::Exists);
    assert_eq!(u.zeropage(r.base + PAGE, PAGE, 0).unwrap(), Copied::All);
    assert_eq!(r.word(0), 0xabab_abab_abab_abab);
    assert_eq!(r.word(1), 0);
    // Unregistered pages fill with zeroes on their own.
    u.unregister(r.base + 2 * PAGE, 2 * PAGE).unwrap();
    assert_eq!(r.word(3), 0);
    // Filling outside the registered part is refused.
    assert!(u.copy(r.base + 2 * PAGE, &page_of(1), 0).is_err());
}

#[test]
fn a_fault_is_reported_and_served_from_another_thread() {
    let r = Region::new(2);
    let u = Uffd::create().unwrap();
    u.api(feature::THREAD_ID).unwrap();
    u.register(r.base, r.len, mode::MISSING).unwrap();
    let seen = AtomicU64::new(0);
    std::thread::scope(|s| {
        let reader = s.spawn(|| r.word(1));
        let mut evs = Vec::new();
        loop {
            let mut fds = [rustix::event::PollFd::new(&u, rustix::event::PollFlags::IN)];
            rustix::event::poll(&mut fds, None).unwrap();
            if u.read_events(&mut evs).unwrap() > 0 {
                break;
            }
        }
        match evs.remove(0) {
            Event::PageFault { addr, flags, tid } => {
                assert_eq!(addr, r.base + PAGE);
                assert_eq!(flags, 0, "a read fault");
                assert_ne!(tid, 0);
                seen.store(addr, Ordering::Relaxed);
            }
            e => panic!("unexpected {e:?}"),
        }
        // DONTWAKE then an explicit wake.
        assert_eq!(u.copy(r.base + PAGE, &page_of(0x5a), mode::DONTWAKE).unwrap(), Copied::All);
        u.wake(r.base + PAGE, PAGE).unwrap();
        assert_eq!(reader.join().unwrap(), 0x5a5a_5a5a_5a5a_5a5a);
    });
    assert_eq!(seen.load(Ordering::Relaxed), r.base + PAGE);
}

#[test]
fn writeprotect_fault_and_move() {
    let r = Region::new(4);
    let u = Uffd::create().unwrap();
    let (got, _) = u.api(feature::MOVE).unwrap();
    assert_ne!(got & feature::MOVE, 0, "this kernel has UFFDIO_MOVE");
    u.register(r.base, r.len, mode::MISSING | mode::WP).unwrap();
    u.copy(r.base, &page_of(7), 0).unwrap();
    u.writeprotect(r.base, PAGE, mode::WRITEPROTECT).unwrap();
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            // SAFETY: writing inside the live mapping; the write-protect
            // fault is resolved by the main thread.
            unsafe { std::ptr::write_volatile(r.base as *mut u64, 9) };
        });
        let mut evs = Vec::new();
        while u.read_events(&mut evs).unwrap() == 0 {
            std::thread::yield_now();
        }
        match &evs[0] {
            Event::PageFault { addr, flags, .. } => {
                assert_eq!(*addr, r.base);
                assert_ne!(flags & 2, 0, "UFFD_PAGEFAULT_FLAG_WP");
            }
            e => panic!("unexpected {e:?}"),
        }
        // Clearing the protection wakes the writer.
        u.writeprotect(r.base, PAGE, 0).unwrap();
        writer.join().unwrap();
    });
    assert_eq!(r.word(0), 9);
    // MOVE the page to a missing spot in the same process.
    assert_eq!(u.move_pages(r.base + 2 * PAGE, r.base, PAGE, 0).unwrap(), PAGE);
    assert_eq!(r.word(2), 9);
}
