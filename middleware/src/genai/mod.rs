//! The sans-IO GenAI core: LLM request and response formats, an incremental SSE decoder, and
//! the per-exchange observer. Free of tower, hyper and pingora types beyond `http` and `bytes`.

pub mod sse;
