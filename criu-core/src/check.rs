//! Kernel feature probes for `criu-rs check`.
