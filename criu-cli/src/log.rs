//! Logging set-up: `-v0..4` and `-o FILE`, as CRIU's options.

use std::path::Path;
use std::sync::Mutex;
use tracing::level_filters::LevelFilter;

/// Maps CRIU's verbosity 0..4 to a tracing level filter.
fn level(v: u8) -> LevelFilter {
    match v {
        0 => LevelFilter::ERROR,
        1 => LevelFilter::ERROR,
        2 => LevelFilter::WARN,
        3 => LevelFilter::INFO,
        _ => LevelFilter::TRACE,
    }
}

/// Installs the global subscriber: to stderr, or to `file` (relative to
/// `dir` when given, like CRIU's `-o` with `-D`).
pub fn init(verbosity: u8, file: Option<&Path>, dir: Option<&Path>) -> std::io::Result<()> {
    let builder = tracing_subscriber::fmt()
        .with_max_level(level(verbosity))
        .with_target(false);
    match file {
        Some(f) => {
            let path = match dir {
                Some(d) if f.is_relative() => d.join(f),
                _ => f.to_path_buf(),
            };
            if let Some(parent) = path.parent() {
                if !parent.as_os_str().is_empty() {
                    std::fs::create_dir_all(parent)?;
                }
            }
            let out = std::fs::File::create(path)?;
            builder.with_ansi(false).with_writer(Mutex::new(out)).init();
        }
        None => builder.with_writer(|| Stderr).init(),
    }
    Ok(())
}

/// stderr, written with any progress bar cleared out of the way.
struct Stderr;

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        crate::progress::suspend(|| std::io::stderr().write(buf))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
