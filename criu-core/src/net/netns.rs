//! Doing something in the network namespace of another process.
//!
//! Sockets keep the namespace they were created in, so a socket made in a
//! short-lived thread that joined the target's namespace (`setns` changes
//! only the calling thread) serves criu-rs afterwards. criu-rs's own
//! threads never move.

use rustix::io::Errno;

/// The inode of `/proc/PID/ns/net`, which identifies the namespace.
pub fn netns_ino(pid: i32) -> Result<u64, Errno> {
    let path = if pid == 0 { "/proc/self/ns/net".to_string() } else { format!("/proc/{pid}/ns/net") };
    rustix::fs::stat(path.as_str()).map(|st| st.st_ino)
}

/// Runs `f` in the network namespace of `pid`: here if it is ours, else
/// in a thread that joins it with `setns(CLONE_NEWNET)` and then ends.
pub fn in_netns_of<T: Send>(pid: i32, f: impl FnOnce() -> T + Send) -> Result<T, Errno> {
    if netns_ino(pid)? == netns_ino(0)? {
        return Ok(f());
    }
    let ns = rustix::fs::open(
        format!("/proc/{pid}/ns/net").as_str(),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    std::thread::scope(|s| {
        s.spawn(move || {
            rustix::thread::move_into_link_name_space(
                rustix::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
