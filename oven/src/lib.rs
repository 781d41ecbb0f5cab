//! Oven's library: everything the binaries share.
//!
//! - [`job`]: the job, its states and the only legal transitions between them, and the result
//!   document of the QMK API contract (section 6.3).
//! - [`ports`]: what Oven needs from the outside world (a job table, a queue, an artifact store),
//!   as traits; `adapters` implement them on AWS and on one machine.
//! - [`hjson`]: the hjson reader QMK's data files need (shared with metadata-gen).
//! - [`keymap`]: the compile request, validated as code (keycode grammar, names, limits).
//! - [`http`]: the API router shared by the HTTP Lambdas and `oven serve`.
//! - [`telemetry`]: JSON logs with the job id on every line, and CloudWatch EMF metrics.
//! - [`worker`]: the compile worker (Lambda and `oven serve`).
//! - [`verify`]: `oven verify`, a rebuild of a job's firmware checked against its recorded hash.
//!
//! The binaries (`functions/*`, `oven`) are thin: they build adapters from their configuration
//! and hand them to the router or the worker in this crate.

pub mod adapters;
pub mod config;
pub mod hjson;
pub mod http;
pub mod job;
pub mod keymap;
pub mod ports;
pub mod setup;
pub mod telemetry;
pub mod time;
pub mod verify;
pub mod worker;
