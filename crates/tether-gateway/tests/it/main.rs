//! Integration tests of the gateway over real loopback sockets.

mod agents;
mod client;
mod fuzz_inputs;
mod fuzz_property;
mod http;
mod prometheus;
mod stream;
mod support;
mod tls;
