//! Reading and writing another process's memory.

use nix::errno::Errno;
use std::io::IoSliceMut;

/// `process_vm_readv(pid, [buf], [addr..])`: reads `buf.len()` bytes at `addr`;
/// returns how many were read (short at the first unreadable page).
pub fn process_vm_readv(pid: i32, addr: u64, buf: &mut [u8]) -> Result<usize, Errno> {
    let len = buf.len();
    let remote = [nix::sys::uio::RemoteIoVec { base: addr as usize, len }];
    nix::sys::uio::process_vm_readv(super::npid(pid), &mut [IoSliceMut::new(buf)], &remote)
}

/// `process_vm_writev(pid, [buf], [addr..])`: writes all of `buf` at `addr`.
pub fn process_vm_writev(pid: i32, addr: u64, buf: &[u8]) -> Result<(), Errno> {
    let remote = [nix::sys::uio::RemoteIoVec { base: addr as usize, len: buf.len() }];
    let n = nix::sys::uio::process_vm_writev(super::npid(pid), &[std::io::IoSlice::new(buf)], &remote)?;
    if n != buf.len() {
        return Err(Errno::EFAULT);
    }
    Ok(())
}

/// Writes all of `buf` at `addr` through `/proc/PID/mem`, which (for the
/// task's tracer) also writes pages the task cannot write, as a debugger
/// plants breakpoints in code.
pub fn write_forced(pid: i32, addr: u64, buf: &[u8]) -> Result<(), Errno> {
    use std::os::unix::fs::FileExt;
    let errno = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
    let mem = std::fs::OpenOptions::new().write(true).open(format!("/proc/{pid}/mem")).map_err(errno)?;
    mem.write_all_at(buf, addr).map_err(errno)
}

/// Reads all of `buf` from `addr`, failing on a short read.
pub fn read_exact(pid: i32, addr: u64, buf: &mut [u8]) -> Result<(), Errno> {
    let mut done = 0;
    while done < buf.len() {
        let n = process_vm_readv(pid, addr + done as u64, &mut buf[done..])?;
        if n == 0 {
            return Err(Errno::EFAULT);
        }
        done += n;
    }
    Ok(())
}
