//! The embedded restorer blob: placing it, relocating it, calling it.
