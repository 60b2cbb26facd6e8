//! The argument ABI between criu-core and the restorer blob.
//!
//! Every struct here is `#[repr(C)]` and holds integers and offsets only
//! (never pointers, never protobuf types). This file is compiled into both
//! the blob and criu-core.
