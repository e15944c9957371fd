//! `tether gateway` run as a user runs it: its log on a pipe whose reader
//! goes away, and exit status 64 for a configuration that cannot run.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::support::{DEADLINE, get, spawn_gateway};

#[test]
fn the_gateway_keeps_serving_after_the_reader_of_its_log_pipe_exits() {
    let (mut child, http, agents, lines) = spawn_gateway(&[
        "--http-listen",
        "127.0.0.1:0",
        "--agent-listen",
        "127.0.0.1:0",
    ]);
    // The reader goes away, as `| head -1` does.
    drop(lines);
    // Every rejected agent is a WARN line written into the closed pipe.
    for _ in 0..50 {
        let mut agent = TcpStream::connect(agents).expect("connect an agent");
        agent.write_all(&[0xff; 11]).expect("garbage");
        let mut sink = Vec::new();
        let _ = agent.read_to_end(&mut sink);
    }
    let started = Instant::now();
    let response = get(http, "/-/healthy").expect("the gateway still answers");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(started.elapsed() < DEADLINE);
    assert!(
        child.0.try_wait().expect("try_wait").is_none(),
        "the gateway is still running"
    );
    // The lines it could not write are counted.
    let metrics = get(http, "/metrics/proxy").expect("self metrics");
    let dropped: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tether_log_dropped_lines_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("tether_log_dropped_lines_total is served");
    assert!(dropped >= 50.0, "{dropped} lines counted as dropped");
}

#[test]
fn an_unusable_certificate_exits_64_before_anything_binds() {
    let dir = std::env::temp_dir().join(format!("tether-gateway-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("cert.pem"), "not a certificate").expect("write");
    std::fs::write(dir.join("key.pem"), "not a key").expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args([
            "gateway",
            "--http-listen",
            "127.0.0.1:0",
            "--agent-listen",
            "127.0.0.1:0",
        ])
        .arg("--tls-cert")
        .arg(dir.join("cert.pem"))
        .arg("--tls-key")
        .arg(dir.join("key.pem"))
        .stdin(Stdio::null())
        .output()
        .expect("run tether gateway");
    std::fs::remove_dir_all(&dir).expect("cleanup");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cert.pem"), "{stderr}");
}
