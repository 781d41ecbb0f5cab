//! metadata-gen as a library: the `build` and `publish` steps behind the command line, so
//! integration tests can drive them directly.

pub mod civil;
pub mod publish;
