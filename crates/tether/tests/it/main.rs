//! Integration tests of the `tether` binary, run as a user runs it.

mod attacks;
mod check;
mod drain;
mod echo;
mod gateway;
mod loadgen;
mod observe;
mod push;
mod support;
