//! Raw `getsockopt(2)` / `setsockopt(2)` for the options rustix does not
//! wrap (`TCP_REPAIR*`, `SO_BUF_LOCK`, `SO_GET_FILTER`, packet options...).
//!
//! Every option is read and written as a plain `#[repr(C)]` value whose
//! size the kernel checks; a short answer is an error ([`Errno::INVAL`]),
//! never a half-filled value.

use rustix::fd::{AsFd, AsRawFd};
use rustix::io::Errno;

/// `getsockopt(fd, level, name, &val, sizeof val)`—an option whose value is
/// a `T` of exactly its size.
///
/// `T` must be a plain-old-data type (integers and arrays of them, C
/// structs without pointers): every bit pattern the kernel writes is valid.
pub fn get<T: Copy + Default>(fd: impl AsFd, level: u32, name: u32) -> Result<T, Errno> {
    let mut val = T::default();
    let len = get_bytes(fd, level, name, as_bytes_mut(&mut val))?;
    if len != std::mem::size_of::<T>() {
        return Err(Errno::INVAL);
    }
    Ok(val)
}

/// `getsockopt(fd, level, name, buf, &len)`: the option's bytes into `buf`;
/// returns how many the kernel wrote (it may write fewer than `buf.len()`).
pub fn get_bytes(fd: impl AsFd, level: u32, name: u32, buf: &mut [u8]) -> Result<usize, Errno> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf` is valid for `len` bytes of writes; the kernel writes at
    // most `len` bytes and stores the length it wrote in `len`.
    let r = unsafe { libc::getsockopt(fd.as_fd().as_raw_fd(), level as i32, name as i32, buf.as_mut_ptr().cast(), &mut len) };
    if r < 0 {
        return Err(Errno::from_raw_os_error(errno()));
    }
    Ok(len as usize)
}

/// `getsockopt(fd, level, name, &int)` as a `u32` (booleans come back 0/1).
pub fn get_u32(fd: impl AsFd, level: u32, name: u32) -> Result<u32, Errno> {
    get::<u32>(fd, level, name)
}

/// `setsockopt(fd, level, name, &val, sizeof val)`.
///
/// `T` must be a plain-old-data type, as for [`get`].
pub fn set<T: Copy>(fd: impl AsFd, level: u32, name: u32, val: &T) -> Result<(), Errno> {
    // SAFETY: `val` is a live `T`; viewing its bytes is fine for POD types.
    let bytes = unsafe { std::slice::from_raw_parts((val as *const T).cast::<u8>(), std::mem::size_of::<T>()) };
    set_bytes(fd, level, name, bytes)
}

/// `setsockopt(fd, level, name, bytes, len)`.
pub fn set_bytes(fd: impl AsFd, level: u32, name: u32, bytes: &[u8]) -> Result<(), Errno> {
    // SAFETY: `bytes` is valid for reads of its length; the kernel copies it.
    let r = unsafe { libc::setsockopt(fd.as_fd().as_raw_fd(), level as i32, name as i32, bytes.as_ptr().cast(), bytes.len() as libc::socklen_t) };
    if r < 0 {
        return Err(Errno::from_raw_os_error(errno()));
    }
    Ok(())
}

/// `setsockopt(fd, level, name, &(int)val)`.
pub fn set_u32(fd: impl AsFd, level: u32, name: u32, val: u32) -> Result<(), Errno> {
    set(fd, level, name, &val)
}

/// `ioctl(fd, request, &int)` for the socket queue sizes (`SIOCINQ`,
/// `SIOCOUTQ`, `SIOCOUTQNSD`).
pub fn ioctl_int(fd: impl AsFd, request: u32) -> Result<u32, Errno> {
    let mut val: libc::c_int = 0;
    // SAFETY: these ioctls write one int through the pointer.
    let r = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), request as _, &mut val) };
    if r < 0 {
        return Err(Errno::from_raw_os_error(errno()));
    }
    Ok(val as u32)
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

fn as_bytes_mut<T: Copy>(val: &mut T) -> &mut [u8] {
    // SAFETY: `val` is a live, exclusively borrowed `T`; callers only use
    // POD types (see `get`), for which any byte pattern is valid.
    unsafe { std::slice::from_raw_parts_mut((val as *mut T).cast::<u8>(), std::mem::size_of::<T>()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_round_trip_and_short_answers_are_errors() {
        let s = rustix::net::socket(rustix::net::AddressFamily::INET, rustix::net::SocketType::STREAM, None).unwrap();
        set_u32(&s, libc::SOL_SOCKET as u32, libc::SO_KEEPALIVE as u32, 1).unwrap();
        assert_eq!(get_u32(&s, libc::SOL_SOCKET as u32, libc::SO_KEEPALIVE as u32).unwrap(), 1);
        // SO_KEEPALIVE is an int: asking for a u64 is refused, not half-filled.
        assert_eq!(get::<u64>(&s, libc::SOL_SOCKET as u32, libc::SO_KEEPALIVE as u32), Err(Errno::INVAL));
        assert!(get_u32(&s, 0xfff, 1).is_err());
    }
}
