//! Shared code for the examples, tests and benches.
