//! The real `promtool check metrics` (Prometheus' own text parser) as an
//! oracle: whatever the renderer writes, Prometheus must read.
//!
//! `promtool` comes from the Debian `prometheus` package, which the test
//! command installs. Its exit code is 1 for a parse error and 3 for lint
//! findings only; the renderer must never cause the former.

use std::io::Write;
use std::process::{Command, Stdio};

use proptest::prelude::*;
use tether_model::{Format, render};

use crate::support::families;

/// Runs `promtool check metrics` on `input` and returns its exit code and output.
fn promtool_check(input: &[u8]) -> (i32, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (Debian package `prometheus`); the README's test command installs it");
    child
        .stdin
        .take()
        .expect("stdin was piped")
        .write_all(input)
        .expect("write to promtool");
    let output = child.wait_with_output().expect("wait for promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

proptest! {
    // Each case starts a process: keep the count moderate.
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn promtool_reads_everything_we_render(model in families(Format::Text, 8)) {
        let mut text = Vec::new();
        render(&model, Format::Text, &mut text);
        let (code, output) = promtool_check(&text);
        prop_assert!(
            code == 0 || code == 3,
            "promtool rejected our output (exit {code}): {output}\n--- rendered ---\n{}",
            String::from_utf8_lossy(&text)
        );
    }
}

/// The oracle itself must be able to say no, or the test above proves nothing.
#[test]
fn promtool_rejects_broken_input() {
    let (code, output) = promtool_check(b"metric{label=\"unterminated} 1\n");
    assert_eq!(code, 1, "promtool accepted a broken exposition: {output}");
}

/// A clean exposition passes promtool's lints too (exit 0, not 3).
#[test]
fn promtool_lints_pass_on_a_clean_family() {
    let input = b"# HELP http_requests_total Requests served.\n# TYPE http_requests_total counter\nhttp_requests_total{code=\"200\"} 3\n";
    let families = tether_model::parse(input, Format::Text).expect("valid input");
    let mut text = Vec::new();
    render(&families, Format::Text, &mut text);
    let (code, output) = promtool_check(&text);
    assert_eq!(code, 0, "promtool found problems: {output}");
    assert_eq!(
        text, input,
        "rendering a parsed canonical input changes nothing"
    );
}
