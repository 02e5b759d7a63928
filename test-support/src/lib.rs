//! What the tests of the workspace share: an in-memory span pipeline that counts span ends,
//! span and attribute lookups, and socket helpers (serving on a bound listener, reserving a
//! port for a server that binds its own, waiting until an address accepts connections).
//!
//! `use llmtrace_test_support::*;` brings all of it in, as `mod support; use support::*;`
//! did when the root tests borrowed `middleware/tests/support/mod.rs` through `#[path]`.
//!
//! # Why this crate does not depend on `llmtrace`
//!
//! It is a dev-dependency of `llmtrace` itself. A dev-dependency that depended on `llmtrace`
//! would link a second copy of it into the crate's own unit tests (`cargo test --lib`
//! compiles `llmtrace` with `cfg(test)` and the helper against the plain library), and any
//! `llmtrace` type crossing between the two would fail to match. Nothing here needs one:
//! the helpers speak the OpenTelemetry API and SDK (one copy in the whole graph), axum and
//! tokio. A helper that needs an `llmtrace` or `llmtrace-proxy` type stays next to the tests
//! that use it (the gateway's start-up and byte-fidelity check live in `proxy/tests/support/`).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod net;
pub mod spans;

pub use net::*;
pub use spans::*;
