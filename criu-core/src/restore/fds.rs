//! The fd table of a restored task: see [`crate::files::fdtable`] (kept
//! here under its old name for the restore steps that use it).

pub use crate::files::fdtable::{close_all_but, fd_floor, install_fds, move_above, open_descs, restore_fds};
