//! Integration tests of the gateway over real loopback sockets.

mod agents;
mod client;
mod http;
mod prometheus;
mod stream;
mod support;
mod tls;
