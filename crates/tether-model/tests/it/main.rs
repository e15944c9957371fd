//! Integration tests of tether-model: the conformance corpus, round trips,
//! the real `promtool` as an oracle, and the fuzz corpus replayed.

mod corpus;
mod fuzz_corpus;
mod promtool;
mod roundtrip;
mod support;
