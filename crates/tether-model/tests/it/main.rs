//! Integration tests of tether-model: the conformance corpus, round trips,
//! the real `promtool` as an oracle, the fuzz corpus replayed, and the
//! streamed check against `check`.

mod corpus;
mod fuzz_corpus;
mod promtool;
mod roundtrip;
mod stream;
mod support;
