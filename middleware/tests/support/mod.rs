//! The helpers these tests share live in the `llmtrace-test-support` dev-crate (the root tests
//! and the gateway's use them too); `mod support; use support::*;` keeps reading as before.

#[allow(unused_imports)]
pub use llmtrace_test_support::*;
