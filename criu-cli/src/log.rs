//! Logging set-up: `-v0..4` and `-o FILE`, as CRIU's options.
//!
//! As in CRIU: `-v0` logs nothing, 1 errors, 2 (default) warnings too, 3
//! information, 4 everything; `-o FILE` sends the log to FILE (relative to
//! the work directory, which is the images directory unless `-W`), created before the
//! command runs so it exists even when the command fails. The command's
//! final error is always one `Error: ...` line on stderr and, with `-o`,
//! also in the log file, whatever the level. At `-v4` every step (each a
//! `tracing` span) ends with a line saying how long it took, as CRIU's
//! logs do.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::Path;
use tracing::level_filters::LevelFilter;

/// Maps CRIU's verbosity 0..4 to a tracing level filter.
fn level(v: u8) -> LevelFilter {
    match v {
        0 => LevelFilter::OFF,
        1 => LevelFilter::ERROR,
        2 => LevelFilter::WARN,
        3 => LevelFilter::INFO,
        _ => LevelFilter::TRACE,
    }
}

/// The log, as set up by [`init`].
pub struct Log {
    /// Whether the log goes to an `-o` file.
    file: bool,
}

impl Log {
    /// Reports the command's final error: on stderr, and in the log file.
    pub fn error(&self, e: &anyhow::Error) {
        let line = one_line(e);
        if self.file {
            let _ = criu_core::logfd::write(format!("Error: {line}\n").as_bytes());
        }
        crate::progress::suspend(|| eprintln!("Error: {line}"));
    }
}

/// An error and its causes on one line, `: `-separated, leaving out a
/// cause whose text the line already ends with (many errors quote their
/// source in their own message).
pub fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Installs the global subscriber: to stderr, or to `file` (relative to
/// `dir` when given: CRIU's work directory, the images directory unless
/// `-W`; `label` names it in errors).
pub fn init(verbosity: u8, file: Option<&Path>, dir: Option<&Path>, label: &str) -> Result<Log> {
    // Each step (a span, at debug level: -v4) ends with a line saying how
    // long it took ("close time.busy=... time.idle=...").
    let builder = tracing_subscriber::fmt()
        .with_max_level(level(verbosity))
        .with_target(false)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE);
    let Some(f) = file else {
        // SAFETY: isatty only inspects the descriptor.
        let tty = unsafe { libc::isatty(libc::STDERR_FILENO) } == 1;
        // A process may set its log up twice (a `service` connection's
        // worker): the first subscriber stays, the log fd follows.
        let _ = builder.with_ansi(tty).with_writer(|| Stderr).try_init();
        return Ok(Log { file: false });
    };
    let path = match dir {
        Some(d) if f.is_relative() => {
            match std::fs::metadata(d) {
                Err(e) => bail!("{label} {}: {e}", d.display()),
                Ok(m) if !m.is_dir() => bail!("{label} {}: not a directory", d.display()),
                Ok(_) => {}
            }
            d.join(f)
        }
        _ => f.to_path_buf(),
    };
    let out = std::fs::File::create(&path).with_context(|| format!("cannot create the log file {}", path.display()))?;
    // Through criu_core::logfd, which moves the log out of the way in the
    // tasks criu-rs forks to restore.
    criu_core::logfd::set(out.into());
    let _ = builder.with_ansi(false).with_writer(|| LogFile).try_init();
    Ok(Log { file: true })
}

/// The `-o` file, one whole event per write.
struct LogFile;

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        criu_core::logfd::write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// stderr (through criu_core::logfd, as [`LogFile`]), written with any
/// progress bar cleared out of the way.
struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        crate::progress::suspend(|| criu_core::logfd::write(buf))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
