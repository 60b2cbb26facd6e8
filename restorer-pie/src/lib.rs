//! The restorer blob's code, as a library.
//!
//! Everything the blob does lives here so that pure logic can be unit
//! tested on the host (`cargo test --manifest-path restorer-pie/Cargo.toml
//! --lib`); `main.rs` only holds the panic handler and the table of
//! exported entry points ([`entry::Entry`]).
//!
//! Rules for code in this crate (it runs with no libc, at an address chosen
//! at run time, possibly with the rest of the address space torn down):
//! no reachable panics (no unchecked indexing, no `unwrap`, no `core::fmt`),
//! no calls outside the blob, no mutable globals. Syscalls go through
//! [`sys`].
#![cfg_attr(not(test), no_std)]

pub mod abi;
pub mod entry;
pub mod mem;
pub mod restore;
pub mod selftest;
pub mod sys;
