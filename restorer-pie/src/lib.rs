//! The restorer blob's code as a library: the argument ABI and the logic
//! that runs inside the process being restored. Built `no_std` for the
//! blob, with std for host-side unit tests.
#![cfg_attr(not(test), no_std)]

pub mod abi;
pub mod restore;
