//! Drawing criu-core's progress reports as an indicatif bar, only on a
//! terminal and only for phases large enough to take a while.

use criu_core::progress::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::Mutex;

/// Phases below this many pages (128 MiB) are not drawn.
const MIN_PAGES: u64 = 32 << 10;
/// Test knob: another threshold, in pages.
const MIN_PAGES_ENV: &str = "CRIU_RS_PROGRESS_MIN_PAGES";

/// The bar of the running phase, if drawn.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Installs the bar in criu-core when stderr is a terminal; otherwise
/// nothing is ever drawn.
pub fn install() {
    if is_tty(std::io::stderr().as_raw_fd()) {
        criu_core::progress::install(Box::new(Bar));
    }
}

/// Runs `f` (a write to stderr) with the bar cleared out of the way.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    let bar = BAR.lock().ok().and_then(|b| b.clone());
    match bar {
        Some(b) => b.suspend(f),
        None => f(),
    }
}

/// `isatty(fd)`.
fn is_tty(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// The [`Progress`] criu-core reports to.
struct Bar;

impl Progress for Bar {
    fn start(&self, what: &'static str, total: u64, out: BorrowedFd<'_>) {
        let min = std::env::var(MIN_PAGES_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(MIN_PAGES);
        if total < min || !is_tty(out.as_raw_fd()) {
            return;
        }
        let style = ProgressStyle::with_template("{msg} [{wide_bar}] {human_pos}/{human_len} pages {percent:>3}%")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let target = ProgressDrawTarget::term_like(Box::new(FdTerm(out.as_raw_fd())));
        let bar = ProgressBar::with_draw_target(Some(total), target).with_style(style).with_message(what);
        if let Ok(mut b) = BAR.lock() {
            *b = Some(bar);
        }
    }

    fn advance(&self, pages: u64) {
        if let Ok(b) = BAR.lock() {
            if let Some(b) = &*b {
                b.inc(pages);
            }
        }
    }

    fn finish(&self) {
        if let Ok(mut b) = BAR.lock() {
            if let Some(b) = b.take() {
                b.finish_and_clear();
            }
        }
    }
}

/// A terminal reached through a raw fd (criu-core keeps it open for the
/// phase), driven with ANSI sequences.
#[derive(Debug)]
struct FdTerm(RawFd);

impl FdTerm {
    /// `write(fd, s)` until all of `s` is written.
    fn put(&self, s: &str) -> std::io::Result<()> {
        let mut b = s.as_bytes();
        while !b.is_empty() {
            // SAFETY: the buffer is valid for its length; the fd is open for the phase.
            let n = unsafe { libc::write(self.0, b.as_ptr().cast(), b.len()) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            b = &b[n as usize..];
        }
        Ok(())
    }
}

impl TermLike for FdTerm {
    fn width(&self) -> u16 {
        let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCGWINSZ fills the winsize it is given.
        let ok = unsafe { libc::ioctl(self.0, libc::TIOCGWINSZ, &mut ws) } == 0;
        if ok && ws.ws_col > 0 { ws.ws_col } else { 80 }
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        if n > 0 { self.put(&format!("\x1b[{n}A")) } else { Ok(()) }
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        if n > 0 { self.put(&format!("\x1b[{n}B")) } else { Ok(()) }
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        if n > 0 { self.put(&format!("\x1b[{n}C")) } else { Ok(()) }
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        if n > 0 { self.put(&format!("\x1b[{n}D")) } else { Ok(()) }
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.put(s)?;
        self.put("\n")
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.put(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.put("\r\x1b[2K")
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}
