//! taptun: a Layer-2 tunnel over UDP, authenticated with HMAC-SHA256,
//! wire-compatible with tinytaptunnel v1.4.
//!
//! The protocol parts (`wire`, `aead`, `replay`, `peer`, `rx`, `tx`,
//! `batch`, `offload`, and `session`, which joins them into one peer's
//! state) are pure and do no I/O; `engine` owns the TAP, the socket and
//! the threads, and only moves bytes between them and a session; `sys` wraps the few syscalls std lacks and, with
//! `lanes` (multi-lane HMAC-SHA256 with SHA-NI), is the only place with
//! `unsafe`.
#![deny(unsafe_code)]

pub mod addr;
pub mod aead;
pub mod announce;
pub mod aqm;
pub mod batch;
pub mod burst;
pub mod busypoll;
pub mod clamp;
pub mod cli;
pub mod codel;
pub mod conffile;
pub mod config;
pub mod ecn;
pub mod engine;
pub mod hook;
pub mod hub;
pub mod key;
// Multi-lane HMAC: SHA-NI intrinsics, each unsafe block with its SAFETY note.
#[allow(unsafe_code)]
pub mod lanes;
pub mod linkgroup;
pub mod mac;
pub mod netlink;
pub mod noise;
pub mod offload;
pub mod peer;
pub mod priority;
pub mod published;
pub mod replay;
pub mod resolve;
pub mod route;
pub mod rx;
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod script;
#[cfg(test)]
mod seeded;
pub mod session;
pub mod sparse;
pub mod state;
pub mod stats;
pub mod sys;
pub mod tx;
pub mod wire;
