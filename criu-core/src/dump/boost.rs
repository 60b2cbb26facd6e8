//! Real-time priority for criu-rs's threads while the tree waits on them.
//!
//! A live snapshot stops the tree twice for a few milliseconds of work
//! (the arming freeze and the dump's freeze, see [`super::live`]), and
//! between them every first write to a protected page waits for the fault
//! server. On a busy machine that work waits for a CPU like any other: with
//! a dozen runnable tasks on two CPUs, a freeze of 5 ms of work lasts 50,
//! and each fault waits a time slice for the server to be scheduled. So the
//! thread doing the frozen work, for the window only, and the fault server,
//! for its life, run `SCHED_FIFO` at the lowest real-time priority (1):
//! ahead of every normal task, behind every real-time one. Both block or
//! finish quickly (the window's work is bounded; the server sleeps in
//! `poll`), and the kernel's real-time throttling
//! (`kernel.sched_rt_runtime_us`) bounds them anyway. Without the privilege
//! (no `CAP_SYS_NICE`, an `RLIMIT_RTPRIO` of 0) the thread keeps its policy
//! and the log says so.

/// The calling thread at real-time priority until dropped.
#[derive(Debug)]
pub struct Boost {
    /// The policy and priority to go back to; `None` if nothing changed.
    before: Option<(i32, i32)>,
    /// Not Send: it is undone on the thread that made it.
    _here: std::marker::PhantomData<*const ()>,
}

impl Boost {
    /// `sched_setscheduler(0, SCHED_FIFO, {1})` for the calling thread.
    pub fn now(what: &str) -> Boost {
        // SAFETY: sched_getscheduler takes no pointers.
        let policy = unsafe { libc::sched_getscheduler(0) };
        let mut param = libc::sched_param { sched_priority: 0 };
        // SAFETY: the kernel writes one sched_param to the pointer given.
        if policy < 0 || unsafe { libc::sched_getparam(0, &mut param) } < 0 {
            return Boost { before: None, _here: std::marker::PhantomData };
        }
        if policy & !libc::SCHED_RESET_ON_FORK == libc::SCHED_FIFO || policy & !libc::SCHED_RESET_ON_FORK == libc::SCHED_RR {
            // Real-time already: left as it is.
            return Boost { before: None, _here: std::marker::PhantomData };
        }
        let fifo = libc::sched_param { sched_priority: 1 };
        // Threads it starts meanwhile get the normal policy.
        let fifo_here = libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK;
        // SAFETY: changes the calling thread's policy only; `fifo` is a valid sched_param.
        if unsafe { libc::sched_setscheduler(0, fifo_here, &fifo) } < 0 {
            tracing::debug!("{what}: not at real-time priority ({})", std::io::Error::last_os_error());
            return Boost { before: None, _here: std::marker::PhantomData };
        }
        Boost { before: Some((policy, param.sched_priority)), _here: std::marker::PhantomData }
    }
}

impl Drop for Boost {
    fn drop(&mut self) {
        if let Some((policy, prio)) = self.before.take() {
            let p = libc::sched_param { sched_priority: prio };
            // SAFETY: changes the calling thread's policy only (a Boost is
            // dropped on the thread that made it: it is not Send).
            unsafe { libc::sched_setscheduler(0, policy, &p) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boosts_and_restores_the_calling_thread() {
        std::thread::spawn(|| {
            // SAFETY: no pointers.
            let before = unsafe { libc::sched_getscheduler(0) };
            let b = Boost::now("test");
            // SAFETY: no pointers.
            let during = unsafe { libc::sched_getscheduler(0) };
            if b.before.is_some() {
                assert_eq!(during & !libc::SCHED_RESET_ON_FORK, libc::SCHED_FIFO);
            }
            drop(b);
            // SAFETY: no pointers.
            assert_eq!(unsafe { libc::sched_getscheduler(0) }, before);
        })
        .join()
        .unwrap();
    }
}
