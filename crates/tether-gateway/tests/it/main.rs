//! Integration tests of the gateway over real loopback sockets.

mod agents;
mod prometheus;
mod stream;
mod support;
mod tls;
