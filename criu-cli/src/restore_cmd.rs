//! `criu-rs restore`.
//!
//! Order, as CRIU: `pre-restore` scripts; the restore (the engine calls
//! `post-restore` and `pre-resume` while every task is held); the pid file
//! and `stats-restore` in the work directory; `post-resume` scripts; the
//! status byte; a watch of the restored tasks (`--watch`, 2 s by default
//! without `-d`) that reports a task dying of a signal with where it
//! faulted; then, without `-d`, waiting for the root and exiting with its
//! status.
//!
//! With `--mmap-page-image` the memory mapped from the images is converted
//! to anonymous memory ([`criu_core::restore::image_map`]) after the
//! status byte: by a detached `criu-rs restore --finish-mmap PID` with `-d`
//! (its log goes to the restore's log file, or its stderr), by criu-rs
//! itself after the watch and before it waits without `-d`.
//! `--finish-mmap PID` alone runs that conversion again, for a helper that
//! was killed.

use anyhow::{bail, Context, Result};
use criu_core::actions::Action;
use criu_core::restore::RestoreOptions;

use crate::cli::{FinalState, Opts};
use crate::stages::Stages;

/// How long a restore without `-d` watches the tasks it let go
/// ([`criu_core::restore::watch`]).
const DEFAULT_WATCH_MS: u64 = 2000;

/// The root's pid once this process restored a tree (for `swrk`'s answer).
static RESTORED: std::sync::OnceLock<i32> = std::sync::OnceLock::new();

/// The pid of the tree this process restored.
pub fn restored_pid() -> Option<i32> {
    RESTORED.get().copied()
}

/// `criu-rs restore`.
pub fn restore(o: &Opts) -> Result<i32> {
    crate::dump_cmd::check_values(o)?;
    if let Some(root) = &o.root {
        let real = std::fs::canonicalize(root).with_context(|| format!("--root {}", root.display()))?;
        if real != std::path::Path::new("/") {
            bail!("not supported: --root {} (criu-rs restores into its own root directory)", root.display());
        }
    }
    if let Some(caps) = &o.cpu_cap {
        if caps.is_empty() || caps.split(',').any(|c| c == "cpu" || c == "all") {
            bail!("not supported: --cpu-cap={caps} (criu-rs does not compare CPU features; fpu, ins and none are accepted)");
        }
    }
    let dir = o.images_dir();
    if let Some(pid) = o.finish_mmap {
        return finish_mmap(pid, &dir).map(|()| 0);
    }
    let stages = Stages::new(&o.action_scripts, &dir, o.status_fd);
    let mut opts = RestoreOptions::new(&dir);
    opts.shell_job = o.shell_job;
    opts.lazy_pages = o.lazy_pages.then(|| match &o.address {
        Some(socket) => socket.into(),
        None => o.work_dir().join("lazy-pages.socket"),
    });
    if o.address.is_some() && !o.lazy_pages {
        bail!("restore --address names the lazy-pages socket: it needs --lazy-pages");
    }
    if o.restore_sibling && !o.detach {
        bail!("--restore-sibling only makes sense with --restore-detached (criu-rs cannot wait for a task that is not its child)");
    }
    opts.sibling = o.restore_sibling;
    opts.leave_stopped = o.final_state == FinalState::Stopped;
    opts.ext_unix_sk = o.ext_unix_sk.is_some();
    opts.mmap_page_image = o.mmap_page_image;
    opts.tcp_established = o.tcp_established;
    opts.tcp_close = o.tcp_close;
    opts.file_locks = o.file_locks;
    opts.inherit_fd = o.inherit_fd.clone();
    opts.external = o.external.clone();
    opts.verify = o.verify;
    opts.actions = Some(stages.hook());
    let watch = std::time::Duration::from_millis(o.watch_ms.unwrap_or(if o.detach { 0 } else { DEFAULT_WATCH_MS }));
    opts.watch = !watch.is_zero();
    stages.run(Action::PreRestore, None).context("pre-restore script failed")?;
    let mut r = criu_core::restore::restore(&opts).context("restore failed")?;
    let _ = RESTORED.set(r.pid);
    if let Some(pidfile) = &o.pidfile {
        let path = o.in_work_dir(pidfile);
        std::fs::write(&path, format!("{}", r.pid)).with_context(|| format!("writing the pid file {}", path.display()))?;
    }
    let stats = criu_core::stats::restore_entry(&r.stats);
    if let Err(e) = criu_core::stats::write(&o.work_dir(), &stats) {
        tracing::warn!("stats-restore not written: {e}");
    }
    if o.display_stats {
        print!("{}", criu_core::stats::display(&stats));
    }
    if let Err(e) = stages.run(Action::PostResume, Some(r.pid)) {
        tracing::error!("post-resume: {e}");
    }
    stages.ready()?;
    // The watch traces the tasks: the conversion comes after it.
    let seen = std::mem::take(&mut r.watch).run(watch, r.pid);
    for d in &seen.deaths {
        tracing::error!("{d}");
        if o.log_file.is_some() {
            crate::progress::suspend(|| eprintln!("criu-rs: {d}"));
        }
    }
    if o.detach {
        if let Some(d) = seen.deaths.first() {
            bail!("{d}");
        }
        if o.mmap_page_image {
            spawn_converter(o, r.pid, &dir)?;
        }
        return Ok(0);
    }
    if o.mmap_page_image && seen.root_status.is_none() {
        // The tree runs meanwhile; a failure leaves it on its mappings.
        if let Err(e) = finish_mmap(r.pid, &dir) {
            tracing::error!("{e:#}");
        }
    }
    // As CRIU: wait for the restored task and exit with its status.
    match seen.root_status {
        Some(status) => Ok(status),
        None => Ok(criu_core::restore::wait_exit(r.pid)?),
    }
}

/// Converts the image mappings of `pid`'s tree (see the module doc).
fn finish_mmap(pid: i32, dir: &std::path::Path) -> Result<()> {
    use criu_core::restore::image_map::convert;
    let files = convert::image_files(dir).with_context(|| format!("finding the pages images in {}", dir.display()))?;
    let t = std::time::Instant::now();
    let done = convert::convert_tree(pid, &files).with_context(|| format!("converting the image mappings of pid {pid}"))?;
    tracing::info!(
        pid,
        tasks = done.tasks,
        chunks = done.chunks,
        bytes = done.bytes,
        recopied = done.recopied,
        longest_stop_us = done.longest_stop.as_micros() as u64,
        skipped = done.skipped,
        elapsed_ms = t.elapsed().as_millis() as u64,
        "image mappings converted: the images are no longer used"
    );
    Ok(())
}

/// Starts the detached conversion helper: `criu-rs restore --finish-mmap
/// PID -D DIR`, in a session of its own, logging at our level to our log
/// file (appended) or our stderr.
///
/// A plain `fork` + `execve`, not waited for: `std::process::Command`
/// waits until the child has exec'd (to report an exec failure), and on a
/// loaded machine the new process can wait milliseconds for a CPU, all of
/// it added to the restore's time to return. An exec failure is reported
/// by the child on the log (and the process keeps running on its mappings;
/// `--finish-mmap PID` converts them).
fn spawn_converter(o: &Opts, pid: i32, dir: &std::path::Path) -> Result<()> {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let exe = std::env::current_exe().context("finding criu-rs's own binary")?;
    let cstr = |b: &[u8]| CString::new(b).context("a NUL in the helper's arguments");
    let argv: Vec<CString> = vec![
        cstr(exe.as_os_str().as_bytes())?,
        cstr(b"restore")?,
        cstr(b"--finish-mmap")?,
        cstr(pid.to_string().as_bytes())?,
        cstr(b"-D")?,
        cstr(dir.as_os_str().as_bytes())?,
        cstr(format!("-v{}", o.level()).as_bytes())?,
    ];
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null").context("opening /dev/null")?;
    let log = match &o.log_file {
        Some(log) => {
            let path = o.in_work_dir(log);
            Some(std::fs::OpenOptions::new().append(true).open(&path).with_context(|| format!("opening the log file {}", path.display()))?)
        }
        None => None,
    };
    let (null_fd, err_fd) = (null.as_raw_fd(), log.as_ref().map_or(2, |f| f.as_raw_fd()));
    const FAILED: &[u8] = b"criu-rs: the conversion helper could not be started (execve failed)\n";
    // SAFETY: between fork and execve the child makes only async-signal-safe
    // syscalls on values prepared before the fork (no allocation, no
    // locks); criu-rs is single-threaded here.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: as above; the child ends in execve or _exit.
        unsafe {
            libc::setsid();
            libc::dup2(null_fd, 0);
            libc::dup2(null_fd, 1);
            if err_fd != 2 {
                libc::dup2(err_fd, 2);
            }
            // Descriptors above 2 (a --status-fd pipe, ...) are not the
            // helper's to keep open.
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            libc::execv(ptrs[0], ptrs.as_ptr());
            libc::write(2, FAILED.as_ptr().cast(), FAILED.len());
            libc::_exit(127);
        }
    }
    if child < 0 {
        return Err(std::io::Error::last_os_error()).context("starting the conversion helper");
    }
    tracing::info!(helper = child, pid, "conversion helper started");
    Ok(())
}
