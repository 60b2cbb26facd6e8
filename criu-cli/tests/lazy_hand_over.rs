//! The Rust side of the hand-over (`criu_core::lazy::hand_over`, for the
//! restore code): this test process registers a region of its own memory
//! with a userfaultfd, hands it to `criu-rs lazy-pages` and reads the region
//! back. A silent connection opened first must not stall the service.

mod common;

use common::*;

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use criu_core::images::ImageDir;
use criu_core::lazy::{hand_over, TaskHello};
use criu_core::uffd::{mode, Uffd, LAZY_FEATURES};

#[test]
fn this_process_hands_over_its_own_region() {
    let size: u64 = 8 << 20;
    let base: u64 = 0x6400_0000_0000;
    use rustix::mm::{mmap_anonymous, MapFlags, ProtFlags};
    // SAFETY: a fresh anonymous mapping at an address nothing else uses
    // (FIXED_NOREPLACE fails rather than replace anything).
    let p = unsafe {
        mmap_anonymous(base as *mut _, size as usize, ProtFlags::READ | ProtFlags::WRITE, MapFlags::PRIVATE | MapFlags::FIXED_NOREPLACE)
    }
    .expect("mmap");
    assert_eq!(p as u64, base);
    let uffd = Uffd::create().expect("userfaultfd");
    let (features, _) = uffd.api(LAZY_FEATURES).expect("UFFDIO_API");
    assert_eq!(features & LAZY_FEATURES, LAZY_FEATURES);
    uffd.register(base, size, mode::MISSING).expect("UFFDIO_REGISTER");

    let dir = tempfile::tempdir().unwrap();
    let images = ImageDir::open_unchecked(dir.path());
    let me = Kid::image_writer(std::process::id(), base, size);
    me.write(&images);
    finish_images(&images);
    let sock = dir.path().join("lazy.sock");
    let mut d = spawn_criu_rs(&["lazy-pages", "-D", dir.path().to_str().unwrap(), "--address", sock.to_str().unwrap(), "--tasks", "1"]);
    wait_for(&sock, &mut d);
    let _silent = UnixStream::connect(&sock).unwrap();
    hand_over(&sock, TaskHello { image_pid: std::process::id(), pid: 0 }, uffd.as_fd()).expect("hand over");
    drop(uffd);
    // SAFETY: the mapping made above, `size` bytes, alive until the munmap below.
    let mem = unsafe { std::slice::from_raw_parts(base as *const u8, size as usize) };
    for (i, w) in mem.chunks_exact(8).enumerate() {
        let a = base + 8 * i as u64;
        let want = if a >= base + size - 4096 { 0 } else { pattern(a) };
        assert_eq!(u64::from_le_bytes(w.try_into().unwrap()), want, "word at {a:#x}");
    }
    let (st, out, err) = d.finish();
    assert!(st.success(), "{out}\n{err}");
    // SAFETY: unmapping the region mapped above; `mem` is not used after.
    unsafe { rustix::mm::munmap(base as *mut _, size as usize) }.unwrap();
}
