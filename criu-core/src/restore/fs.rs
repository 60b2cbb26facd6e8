//! Root, working directory and umask of the task being restored (child side).

use super::error::{Result, SysContext};
use super::plan::FsPlan;
use rustix::fs::Mode;

/// `chdir(cwd)`, then `chroot(root)` if it differs from the current root
/// (both paths are as seen from criu-rs's root, so chdir comes first), then
/// `umask(umask)`.
pub fn restore_fs(fs: &FsPlan) -> Result<()> {
    rustix::process::chdir(&fs.cwd).sys(|| format!("chdir({})", fs.cwd.display()))?;
    let current_root = std::fs::read_link("/proc/self/root").unwrap_or_else(|_| "/".into());
    if current_root != fs.root {
        rustix::process::chroot(&fs.root).sys(|| format!("chroot({})", fs.root.display()))?;
    }
    rustix::process::umask(Mode::from_bits_retain(fs.umask & 0o777));
    Ok(())
}
