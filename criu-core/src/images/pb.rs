//! Generated protobuf types for CRIU's image schemas (see `proto/`).
//!
//! Every proto2 `required` field is an `Option` here (see `build/protos.rs`):
//! set it with `Some(..)`; [`Validate::missing_required`] reports the first
//! one left unset, and the image writer refuses such an entry.

#![allow(clippy::all, missing_docs)]

/// Checks proto2 `required` fields, which prost does not enforce.
pub trait Validate {
    /// The dotted path of the first missing required field (descending into
    /// sub-messages, e.g. `"thread_info.gpregs.ip"`), or `None` if complete.
    fn missing_required(&self) -> Option<String>;
}

/// The encoded `google.protobuf.FileDescriptorSet` of `proto/` as written
/// (`required` labels intact), for tools and layout checks.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

include!(concat!(env!("OUT_DIR"), "/_.rs"));
include!(concat!(env!("OUT_DIR"), "/required.rs"));
