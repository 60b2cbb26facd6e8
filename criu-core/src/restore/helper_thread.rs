//! A second thread inside a task being prepared, so that filling its
//! memory can use a second core.
//!
//! The task is traced by criu-rs with `PTRACE_O_TRACECLONE`, which would
//! stop an ordinary new thread until the tracer looks at it (it never
//! does before the blob): the thread is created with `CLONE_UNTRACED`
//! through `clone(2)`, so it runs without a thread-local storage block of
//! its own. Its work must therefore stay clear of anything that uses TLS:
//! no allocation, no `errno` (rustix's raw syscalls only), no panics, no
//! locks. It blocks every signal, and [`run_pair`] returns only once the
//! thread has exited and its tid is released, so the task is
//! single-threaded again before it forks or enters the blob.

use std::ffi::c_void;
use std::sync::atomic::{AtomicU32, Ordering};

/// Bytes of the helper's stack (its work needs little).
const STACK: usize = 256 << 10;

/// `clone(2)` flags of the helper: a thread of this process, not traced.
const FLAGS: i32 = libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM
    | libc::CLONE_UNTRACED
    | libc::CLONE_PARENT_SETTID
    | libc::CLONE_CHILD_CLEARTID;

/// The helper's entry: runs the closure at `arg`, then `clone`'s wrapper
/// ends the thread with `exit(2)`.
extern "C" fn entry<F: Fn() + Sync>(arg: *mut c_void) -> libc::c_int {
    // SAFETY: `arg` is the `&F` `spawn` passed; `run_pair` keeps it alive
    // until this thread is gone.
    let work = unsafe { &*(arg as *const F) };
    work();
    0
}

/// The running helper: its tid word (cleared by the kernel at exit) and
/// its stack mapping.
struct Running {
    tid: Box<AtomicU32>,
    stack: *mut c_void,
}

impl Running {
    /// Waits until the thread has exited (`CLONE_CHILD_CLEARTID` wakes the
    /// tid word) and its tid is released, then frees the stack.
    fn join(self) {
        let tid = self.tid.load(Ordering::Acquire);
        loop {
            let v = self.tid.load(Ordering::Acquire);
            if v == 0 {
                break;
            }
            // Shared (not private) futex: the kernel's wake at exit is one.
            let _ = rustix::thread::futex::wait(&self.tid, rustix::thread::futex::Flags::empty(), v, None);
        }
        // The tid word is cleared just before the thread is released:
        // wait for its /proc entry to go, so the tid is free again.
        let path = format!("/proc/self/task/{tid}");
        for _ in 0..10_000 {
            if !std::path::Path::new(&path).exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        // SAFETY: the thread that used this stack is gone.
        let _ = unsafe { rustix::mm::munmap(self.stack, STACK) };
    }
}

/// `clone(entry, stack, FLAGS, work, &tid, NULL, &tid)` with every signal
/// blocked in the new thread; `None` if it cannot be created.
fn spawn<F: Fn() + Sync>(work: &F) -> Option<Running> {
    // SAFETY: a fresh private mapping wherever the kernel likes.
    let stack = unsafe {
        rustix::mm::mmap_anonymous(
            std::ptr::null_mut(),
            STACK,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::PRIVATE | rustix::mm::MapFlags::STACK,
        )
    }
    .ok()?;
    let tid = Box::new(AtomicU32::new(0));
    // SAFETY: sigset manipulation on local values, and the calling
    // thread's own mask (restored right after the clone).
    let old = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    };
    let tid_ptr = tid.as_ptr() as *mut libc::pid_t;
    // SAFETY: the stack is ours and unused (it grows down from its end,
    // 16-byte aligned); `work` outlives the thread (see `run_pair`); the
    // tid word lives in a Box that outlives the thread; `entry` only
    // calls `work`.
    let r = unsafe {
        libc::clone(
            entry::<F>,
            (stack as *mut u8).add(STACK) as *mut c_void,
            FLAGS,
            work as *const F as *mut c_void,
            tid_ptr,
            std::ptr::null_mut::<c_void>(),
            tid_ptr,
        )
    };
    // SAFETY: restoring this thread's own mask.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if r <= 0 {
        // SAFETY: no thread uses the stack.
        let _ = unsafe { rustix::mm::munmap(stack, STACK) };
        return None;
    }
    Some(Running { tid, stack })
}

/// Joins the helper even if `main` unwinds.
struct JoinOnDrop(Option<Running>);

impl Drop for JoinOnDrop {
    fn drop(&mut self) {
        if let Some(r) = self.0.take() {
            r.join();
        }
    }
}

/// Runs `helper_work` on a new untraced thread of this process while
/// `main` runs on the calling thread; `main` gets the helper's tid (`None`
/// if no thread could be created, then `helper_work` never runs). Returns
/// `main`'s result once the helper has finished and is gone.
///
/// `helper_work` must follow the module's rules (no TLS, no allocation, no
/// panics) and must end by itself once `main` asks it to (through state the
/// two share).
pub fn run_pair<F: Fn() + Sync, R>(helper_work: &F, main: impl FnOnce(Option<i32>) -> R) -> R {
    let running = spawn(helper_work);
    let tid = running.as_ref().map(|r| r.tid.load(Ordering::Acquire) as i32);
    let _join = JoinOnDrop(running);
    main(tid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn helper_runs_in_this_process_and_is_gone_after() {
        let sum = AtomicU64::new(0);
        let me = std::process::id() as i32;
        let work = || {
            sum.fetch_add(rustix::process::getpid().as_raw_nonzero().get() as u64, Ordering::SeqCst);
        };
        let tid = run_pair(&work, |tid| tid);
        let tid = tid.expect("helper thread created");
        assert_ne!(tid, me);
        assert_eq!(sum.load(Ordering::SeqCst), me as u64, "the helper ran once, in this process");
        assert!(!std::path::Path::new(&format!("/proc/self/task/{tid}")).exists(), "helper thread still there");
    }
}
