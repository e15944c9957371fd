//! Integration tests of tether-tcp: real sockets on loopback, metrics read
//! from a recorder local to each test.

mod echo;
mod server;
mod support;
