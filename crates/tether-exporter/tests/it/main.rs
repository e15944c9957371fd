//! The integration tests of tether-exporter: one binary, one module per area.

mod agent;
mod install;
mod protoc;
mod recorder;
mod stream;
mod support;
