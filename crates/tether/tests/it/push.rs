//! The Pushgateway-compatible push API of `tether gateway`, run as a user
//! runs it: one corpus of requests replayed against the real Pushgateway and
//! against tether with the answers and expositions compared, the official
//! Python client, a gateway killed in the middle of a stream of pushes, a
//! corrupt store file, and bodies too large to take.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use tether_model::{Format, encode_delimited, encode_delimited_frame, parse, pb};

use crate::support::{DEADLINE, Killed, Response, logged_addr, request, tether_binary};

/// Where Debian's `prometheus-pushgateway` package installs the Pushgateway.
const PUSHGATEWAY: &str = "/usr/bin/prometheus-pushgateway";

/// The content type of a body of delimited protobuf messages.
const PROTOBUF: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// The content type the Python client sends.
const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Families that are the servers' own, not pushed: left out of comparisons.
const OWN_FAMILIES: [&str; 5] = ["tether_", "go_", "process_", "pushgateway_", "promhttp_"];

/// The two gauges each group carries, whose values are times.
const PUSH_TIMES: [&str; 2] = ["push_time_seconds", "push_failure_time_seconds"];

const MIB: u64 = 1 << 20;

/// The most memory the gateway may use while it refuses oversized bodies.
const MAX_PEAK_MEMORY: u64 = 200 * MIB;

// ---------------------------------------------------------------------------
// The servers under test.

/// A `tether gateway` child whose every log line is kept.
struct Tether {
    child: Killed,
    http: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Tether {
    /// Starts `tether gateway` on loopback ports the system picks, with
    /// `args` added, and waits until it logs that it listens.
    fn start(args: &[&str]) -> Tether {
        let mut command = Command::new(tether_binary());
        command.arg("gateway");
        Tether::spawn(command, args)
    }

    /// Starts `tether gateway` with its `--data-dir` on a tmpfs of
    /// `size_kib` in a mount namespace of its own (so the mount goes with
    /// the process), with `args` added.
    fn start_on_small_disk(size_kib: u32, args: &[&str]) -> Tether {
        let mount_point =
            std::env::temp_dir().join(format!("tether-small-disk-{}", std::process::id()));
        std::fs::create_dir_all(&mount_point).expect("make the mount point");
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs -o size={size_kib}k tmpfs \"$1\" && shift && exec \"$@\""
            ))
            .arg("sh")
            .arg(&mount_point)
            .arg(tether_binary())
            .arg("gateway")
            .arg("--data-dir")
            .arg(&mount_point);
        Tether::spawn(command, args)
    }

    fn spawn(mut command: Command, args: &[&str]) -> Tether {
        let mut child = command
            .args([
                "--http-listen",
                "127.0.0.1:0",
                "--agent-listen",
                "127.0.0.1:0",
            ])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tether gateway");
        let stderr = child.stderr.take().expect("stderr was piped");
        let child = Killed(child);
        let log = Arc::new(Mutex::new(Vec::new()));
        let (lines_tx, lines_rx) = mpsc::channel();
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            // Read on to the end, so that the gateway never blocks on its log.
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                kept.lock().expect("the log lock").push(line.clone());
                let _ = lines_tx.send(line);
            }
        });
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) if line.contains("gateway listening") => {
                    let http = logged_addr(&line, "http=").expect("the HTTP address");
                    return Tether { child, http, log };
                }
                Ok(_) => {}
                Err(_) => panic!(
                    "tether gateway {args:?} did not log that it listens; its log:\n{}",
                    log.lock().expect("the log lock").join("\n")
                ),
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Kills the gateway with SIGKILL, as a crash would, and reaps it.
    fn crash(&mut self) {
        self.child.0.kill().expect("SIGKILL the gateway");
        self.child.0.wait().expect("reap the gateway");
    }

    /// The log lines so far.
    fn log(&self) -> Vec<String> {
        self.log.lock().expect("the log lock").clone()
    }

    /// Waits until a log line satisfies `found`; fails past [`DEADLINE`].
    fn wait_for_log(&self, what: &str, found: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            if let Some(line) = self.log().into_iter().find(|line| found(line)) {
                return line;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "no log line {what} after {DEADLINE:?}; the log:\n{}",
                self.log().join("\n")
            );
            // The next look, not a synchronization: the log is read again.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The most memory the gateway has used, from `/proc/<pid>/status`.
    fn peak_memory(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read the gateway's status");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM is in the status");
        kib * 1024
    }
}

/// A Prometheus Pushgateway child without persistence.
struct Pushgateway {
    _child: Killed,
    addr: SocketAddr,
}

impl Pushgateway {
    /// Starts the Pushgateway on a free loopback port with the admin API on,
    /// and waits until it is ready.
    fn start() -> Pushgateway {
        assert!(
            Path::new(PUSHGATEWAY).exists(),
            "{PUSHGATEWAY} is missing: run ./scripts/test, which installs the Debian package \
             prometheus-pushgateway"
        );
        // The port is free when picked but may be taken before the
        // Pushgateway binds it; then it exits, and another port is tried.
        for _ in 0..3 {
            let addr = TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free port");
            let child = Command::new(PUSHGATEWAY)
                .arg(format!("--web.listen-address={addr}"))
                .arg("--persistence.file=")
                .arg("--web.enable-admin-api")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start the Pushgateway");
            let mut child = Killed(child);
            let started = Instant::now();
            loop {
                if child.0.try_wait().expect("try_wait").is_some() {
                    break;
                }
                if request(addr, "GET", "/-/ready", &[], b"").is_ok_and(|r| r.status == 200) {
                    return Pushgateway {
                        _child: child,
                        addr,
                    };
                }
                assert!(
                    started.elapsed() < DEADLINE,
                    "the Pushgateway is not ready after {DEADLINE:?}"
                );
                // The next look, not a synchronization: readiness is asked again.
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("the Pushgateway exited three times at start");
    }
}

/// `method path` with `headers` and `body`; fails the test when the server
/// does not answer.
fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    request(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} to {addr}: {e}"))
}

/// The exposition at `/metrics`, which must answer 200.
fn exposition(addr: SocketAddr) -> String {
    let response = send(addr, "GET", "/metrics", &[], b"");
    assert_eq!(response.status, 200, "GET /metrics: {}", response.text());
    response.text()
}

/// The JSON at `path`, which must answer 200.
fn json(addr: SocketAddr, path: &str) -> Json {
    let response = send(addr, "GET", path, &[], b"");
    assert_eq!(response.status, 200, "GET {path}: {}", response.text());
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("GET {path} is not JSON ({e}): {}", response.text()))
}

// ---------------------------------------------------------------------------
// Expositions, read line by line and normalised for comparison.

/// One sample line of an exposition.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    /// The value and, when there is one, the timestamp.
    value: String,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Every sample of a text exposition; comments and blank lines are skipped.
fn samples(exposition: &str) -> Vec<Sample> {
    exposition
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| parse_sample(line).unwrap_or_else(|| panic!("not a sample line: {line:?}")))
        .collect()
}

/// `name{label="value",...} value [timestamp]`, escapes decoded.
fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = rest.split_once('=')?;
            let mut chars = after.strip_prefix('"')?.char_indices();
            let mut value = String::new();
            let end = loop {
                match chars.next()? {
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    (at, '"') => break at,
                    (_, c) => value.push(c),
                }
            };
            labels.push((label.trim().to_owned(), value));
            rest = after[1 + end + 1..].trim_start();
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            }
        }
    }
    let value = rest.trim().to_owned();
    (!value.is_empty()).then_some(Sample {
        name,
        labels,
        value,
    })
}

/// A number in one spelling whatever the server's: Go writes `1e+300` and
/// `+Inf`, others `1e300` and `inf`.
fn canonical_number(text: &str) -> Option<String> {
    let number: f64 = match text {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        other => other.parse().ok()?,
    };
    Some(if number.is_nan() {
        "NaN".to_owned()
    } else if number == 0.0 {
        // `-0` and `0` alike.
        "0".to_owned()
    } else if number.is_infinite() {
        if number > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{number:?}")
    })
}

/// A time of [`PUSH_TIMES`]: only whether it is zero ("never") matters.
fn time_marker(text: &str) -> &'static str {
    match text.parse::<f64>() {
        Ok(0.0) => "0",
        Ok(_) => "<time>",
        Err(_) => "<not a number>",
    }
}

fn escape_label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sample as one line with its labels sorted, its value canonical, and a
/// time of [`PUSH_TIMES`] replaced by a marker.
fn normalised_sample(sample: &Sample) -> String {
    let mut labels = sample.labels.clone();
    labels.sort();
    let labels: Vec<String> = labels
        .iter()
        .map(|(name, value)| format!("{name}=\"{}\"", escape_label_value(value)))
        .collect();
    let mut parts = sample.value.split_whitespace();
    let value = parts.next().unwrap_or_default();
    let value = if PUSH_TIMES.contains(&sample.name.as_str()) {
        time_marker(value).to_owned()
    } else {
        canonical_number(value).unwrap_or_else(|| format!("<{value}>"))
    };
    let timestamp: Vec<&str> = parts.collect();
    let mut line = format!("{}{{{}}} {value}", sample.name, labels.join(","));
    if !timestamp.is_empty() {
        line.push(' ');
        line.push_str(&timestamp.join(" "));
    }
    line
}

/// The pushed part of an exposition: [`OWN_FAMILIES`] and comments left out,
/// each sample normalised, the lines sorted.
fn normalised(exposition: &str) -> Vec<String> {
    let mut lines: Vec<String> = samples(exposition)
        .iter()
        .filter(|s| !OWN_FAMILIES.iter().any(|own| s.name.starts_with(own)))
        .map(normalised_sample)
        .collect();
    lines.sort();
    lines
}

/// `/api/v1/metrics` in a comparable form: groups sorted, `time_stamp`s
/// left out, numbers canonical and push times replaced by a marker.
fn normalised_groups(api: &Json) -> Vec<String> {
    let groups = api["data"].as_array().expect("data is a list of groups");
    let mut out: Vec<String> = groups
        .iter()
        .map(|group| normalised_json(group, None).to_string())
        .collect();
    out.sort();
    out
}

fn normalised_json(value: &Json, family: Option<&str>) -> Json {
    match value {
        Json::Object(fields) => Json::Object(
            fields
                .iter()
                .filter(|(key, _)| key.as_str() != "time_stamp")
                .map(|(key, field)| {
                    // A key of `buckets` or `quantiles` is a number too.
                    let key = canonical_number(key).unwrap_or_else(|| key.clone());
                    let family = match family {
                        Some(family) => Some(family),
                        None if field.is_object() => Some(key.as_str()),
                        None => None,
                    };
                    let field = normalised_json(field, family);
                    (key.clone(), field)
                })
                .collect(),
        ),
        Json::Array(items) => Json::Array(
            items
                .iter()
                .map(|item| normalised_json(item, family))
                .collect(),
        ),
        Json::String(text) if family.is_some_and(|f| PUSH_TIMES.contains(&f)) => {
            match canonical_number(text) {
                Some(_) => Json::String(time_marker(text).to_owned()),
                None => value.clone(),
            }
        }
        Json::String(text) => match canonical_number(text) {
            Some(number) => Json::String(number),
            None => value.clone(),
        },
        other => other.clone(),
    }
}

// ---------------------------------------------------------------------------
// Bodies: delimited protobuf, gzip and framed snappy, encoded by hand.

/// The families of the text exposition `text` as delimited protobuf.
fn protobuf(text: &str) -> Vec<u8> {
    let families = parse(text.as_bytes(), Format::Text).expect("a valid exposition");
    let mut body = Vec::new();
    encode_delimited(&families, &mut body);
    body
}

/// A delimited protobuf body of one gauge family `name` with `metrics`.
fn protobuf_gauge(name: &str, metrics: Vec<pb::Metric>) -> Vec<u8> {
    let family = pb::MetricFamily {
        name: Some(name.to_owned()),
        r#type: Some(pb::MetricType::Gauge as i32),
        metric: metrics,
        ..pb::MetricFamily::default()
    };
    let mut body = Vec::new();
    encode_delimited_frame(&family, &mut body);
    body
}

fn gauge_metric(value: f64, timestamp_ms: Option<i64>) -> pb::Metric {
    pb::Metric {
        gauge: Some(pb::Gauge { value: Some(value) }),
        timestamp_ms,
        ..pb::Metric::default()
    }
}

/// CRC-32 (IEEE) as gzip uses it.
fn crc32(data: &[u8]) -> u32 {
    crc_reflected(data, 0xedb8_8320)
}

/// CRC-32C (Castagnoli) as framed snappy uses it.
fn crc32c(data: &[u8]) -> u32 {
    crc_reflected(data, 0x82f6_3b78)
}

fn crc_reflected(data: &[u8], polynomial: u32) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ polynomial
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `vector` times the GF(2) matrix `matrix` (column `i` is the image of bit `i`).
fn gf2_times(matrix: &[u32; 32], mut vector: u32) -> u32 {
    let mut sum = 0;
    let mut column = 0;
    while vector != 0 {
        if vector & 1 == 1 {
            sum ^= matrix[column];
        }
        vector >>= 1;
        column += 1;
    }
    sum
}

fn gf2_square(matrix: &[u32; 32]) -> [u32; 32] {
    let mut square = [0; 32];
    for (column, image) in square.iter_mut().enumerate() {
        *image = gf2_times(matrix, matrix[column]);
    }
    square
}

/// The CRC-32 of `a` followed by `b`, from their CRCs and `b`'s length, as
/// zlib's `crc32_combine` computes it: `a`'s CRC moved past `len_b` zero bytes.
fn crc32_combine(crc_a: u32, crc_b: u32, mut len_b: u64) -> u32 {
    // The operator of one zero bit, squared three times: one zero byte.
    let mut operator = [0u32; 32];
    operator[0] = 0xedb8_8320;
    for (bit, image) in operator.iter_mut().enumerate().skip(1) {
        *image = 1 << (bit - 1);
    }
    for _ in 0..3 {
        operator = gf2_square(&operator);
    }
    let mut crc = crc_a;
    while len_b != 0 {
        if len_b & 1 == 1 {
            crc = gf2_times(&operator, crc);
        }
        operator = gf2_square(&operator);
        len_b >>= 1;
    }
    crc ^ crc_b
}

/// The CRC-32 of `n` copies of `byte`, without the bytes.
fn crc32_of_repeated(byte: u8, n: u64) -> u32 {
    let (mut crc, mut unit, mut unit_len, mut left) = (0, crc32(&[byte]), 1u64, n);
    while left != 0 {
        if left & 1 == 1 {
            crc = crc32_combine(crc, unit, unit_len);
        }
        unit = crc32_combine(unit, unit, unit_len);
        unit_len *= 2;
        left >>= 1;
    }
    crc
}

const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// `data` as a gzip member of stored (uncompressed) deflate blocks.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = GZIP_HEADER.to_vec();
    let mut blocks = data.chunks(usize::from(u16::MAX)).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(block) = blocks.next() {
        let len = u16::try_from(block.len()).expect("a block is at most u16::MAX long");
        out.push(u8::from(blocks.peek().is_none()));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// Deflate's bits, least significant first.
struct Bits {
    out: Vec<u8>,
    pending: u64,
    n_pending: u32,
}

impl Bits {
    fn new() -> Bits {
        Bits {
            out: Vec::new(),
            pending: 0,
            n_pending: 0,
        }
    }

    fn put(&mut self, value: u32, n_bits: u32) {
        self.pending |= u64::from(value) << self.n_pending;
        self.n_pending += n_bits;
        while self.n_pending >= 8 {
            self.out.push(self.pending as u8);
            self.pending >>= 8;
            self.n_pending -= 8;
        }
    }

    /// A Huffman code, which deflate writes from its most significant bit.
    fn put_code(&mut self, code: u32, n_bits: u32) {
        self.put(code.reverse_bits() >> (32 - n_bits), n_bits);
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n_pending > 0 {
            self.out.push(self.pending as u8);
        }
        self.out
    }
}

/// A gzip member that inflates to `n` newlines (blank lines, a valid text
/// exposition) from about `n / 1000` bytes: one dynamic-Huffman block whose
/// codes give "copy 258 bytes from 1 back" two bits.
fn gzip_bomb(n: u64) -> Vec<u8> {
    // Literal/length code: '\n' = 10, end of block = 256, length 258 = 285;
    // canonical codes from lengths 2, 2, 1: 10 -> 0b10, 256 -> 0b11, 285 -> 0b0.
    // Distance code: distance 1 = 0 -> 0b0, 1 -> 0b1 (so that it is complete).
    // Code-length code over 1, 2, 17 and 18, all of length 2:
    // 1 -> 0b00, 2 -> 0b01, 17 -> 0b10, 18 -> 0b11.
    let mut bits = Bits::new();
    bits.put(1, 1); // the final block
    bits.put(2, 2); // dynamic Huffman
    bits.put(286 - 257, 5); // HLIT
    bits.put(2 - 1, 5); // HDIST
    bits.put(18 - 4, 4); // HCLEN
    // Code-length code lengths in deflate's order
    // 16 17 18 0 8 7 9 6 10 5 11 4 12 3 13 2 14 1.
    for length in [0, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 2] {
        bits.put(length, 3);
    }
    let length_2 = |bits: &mut Bits| bits.put_code(0b01, 2);
    let length_1 = |bits: &mut Bits| bits.put_code(0b00, 2);
    let zeros = |bits: &mut Bits, n_zeros: u32| match n_zeros {
        3..=10 => {
            bits.put_code(0b10, 2);
            bits.put(n_zeros - 3, 3);
        }
        11..=138 => {
            bits.put_code(0b11, 2);
            bits.put(n_zeros - 11, 7);
        }
        _ => unreachable!("runs are cut to fit"),
    };
    zeros(&mut bits, 10); // 0..=9
    length_2(&mut bits); // 10
    zeros(&mut bits, 138); // 11..=148
    zeros(&mut bits, 107); // 149..=255
    length_2(&mut bits); // 256
    zeros(&mut bits, 28); // 257..=284
    length_1(&mut bits); // 285
    length_1(&mut bits); // distance 0
    length_1(&mut bits); // distance 1
    // The data: one literal, then copies of 258, then literals for the rest.
    let newline = |bits: &mut Bits| bits.put_code(0b10, 2);
    newline(&mut bits);
    let n_copies = (n - 1) / 258;
    for _ in 0..n_copies {
        bits.put(0, 2); // length code 0b0, distance code 0b0
    }
    for _ in 0..(n - 1) % 258 {
        newline(&mut bits);
    }
    bits.put_code(0b11, 2); // end of block
    let mut out = GZIP_HEADER.to_vec();
    out.extend_from_slice(&bits.finish());
    out.extend_from_slice(&crc32_of_repeated(b'\n', n).to_le_bytes());
    out.extend_from_slice(&(n as u32).to_le_bytes());
    out
}

/// `data` in the framed snappy format, as uncompressed chunks (which the
/// format allows for any chunk).
fn snappy_framed(data: &[u8]) -> Vec<u8> {
    let mut out = b"\xff\x06\x00\x00sNaPpY".to_vec();
    for chunk in data.chunks(1 << 16) {
        let crc = crc32c(chunk);
        let masked = crc.rotate_right(15).wrapping_add(0xa282_ead8);
        let len = u32::try_from(chunk.len() + 4).expect("a chunk is short");
        out.push(0x01);
        out.extend_from_slice(&len.to_le_bytes()[..3]);
        out.extend_from_slice(&masked.to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

#[test]
fn the_hand_made_encodings_match_their_formats() {
    // Known answers: "123456789" is the check input of both CRCs.
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    // The combined CRC of repeated bytes is the CRC of the bytes.
    for n in [1, 2, 3, 258, 1000, 4097] {
        assert_eq!(crc32_of_repeated(b'\n', n), crc32(&vec![b'\n'; n as usize]));
    }
    // Framed snappy of "sn 1\n", as the reference encoders write it.
    assert_eq!(
        snappy_framed(b"sn 1\n"),
        b"\xff\x06\x00\x00sNaPpY\x01\x09\x00\x00\x7c\x5d\x19\xda\x73\x6e\x20\x31\x0a"
    );
    // A bomb is about a thousandth of what it inflates to.
    let bomb = gzip_bomb(1 << 30);
    assert!(bomb.len() < (1 << 30) / 1000, "{} bytes", bomb.len());
}

// ---------------------------------------------------------------------------
// The corpus.

/// One request of the corpus, the status the Pushgateway answers, and lines
/// that must (or, prefixed by `!`, must not) be in the normalised exposition
/// afterwards.
struct Step {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
    status: u16,
    then: Vec<&'static str>,
}

impl Step {
    fn new(method: &'static str, path: &str, body: &[u8], status: u16) -> Step {
        Step {
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body: body.to_vec(),
            status,
            then: Vec::new(),
        }
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Step {
        self.headers.push((name, value));
        self
    }

    fn then(mut self, lines: &[&'static str]) -> Step {
        self.then.extend_from_slice(lines);
        self
    }

    fn describe(&self) -> String {
        let body = String::from_utf8_lossy(&self.body);
        let body: String = body.chars().take(120).collect();
        format!("{} {} {:?} {body:?}", self.method, self.path, self.headers)
    }
}

fn put(path: &str, body: &str, status: u16) -> Step {
    Step::new("PUT", path, body.as_bytes(), status)
}

fn post(path: &str, body: &str, status: u16) -> Step {
    Step::new("POST", path, body.as_bytes(), status)
}

fn delete(path: &str, status: u16) -> Step {
    Step::new("DELETE", path, b"", status)
}

/// The requests replayed against both servers, in order: every rule of the
/// Pushgateway's API, each checked against the Pushgateway itself.
fn corpus() -> Vec<Step> {
    vec![
        // PUT replaces a group; POST replaces only the names it carries.
        put(
            "/metrics/job/basic",
            "# TYPE c counter\nc 1\n# TYPE g gauge\ng{a=\"x\"} 2\ng{a=\"y\"} 3\n",
            200,
        )
        .header("Content-Type", TEXT)
        .then(&[
            "c{instance=\"\",job=\"basic\"} 1.0",
            "g{a=\"x\",instance=\"\",job=\"basic\"} 2.0",
            "push_time_seconds{instance=\"\",job=\"basic\"} <time>",
            "push_failure_time_seconds{instance=\"\",job=\"basic\"} 0",
        ]),
        post(
            "/metrics/job/basic",
            "# TYPE g gauge\ng{a=\"z\"} 4\nu 5\n",
            200,
        )
        .then(&[
            "c{instance=\"\",job=\"basic\"} 1.0",
            "g{a=\"z\",instance=\"\",job=\"basic\"} 4.0",
            "!g{a=\"x\",instance=\"\",job=\"basic\"} 2.0",
            "u{instance=\"\",job=\"basic\"} 5.0",
        ]),
        put(
            "/metrics/job/basic/instance/i1",
            "# TYPE c counter\nc 7\n",
            200,
        )
        .then(&["c{instance=\"i1\",job=\"basic\"} 7.0"]),
        post("/metrics/job/basic", "", 200).then(&["u{instance=\"\",job=\"basic\"} 5.0"]),
        put("/metrics/job/emptied", "e 1\n", 200),
        put("/metrics/job/emptied", "", 200).then(&[
            "!e{instance=\"\",job=\"emptied\"} 1.0",
            "push_time_seconds{instance=\"\",job=\"emptied\"} <time>",
        ]),
        put("/metrics/job/fresh_empty", "", 200)
            .then(&["push_time_seconds{instance=\"\",job=\"fresh_empty\"} <time>"]),
        post("/metrics/job/fresh_post", "", 200),
        put("/metrics/job/comments", "# HELP only a comment\n", 200),
        // What the Python client sends for a counter: `_total` and a
        // `_created` gauge beside it.
        put(
            "/metrics/job/python_counter",
            "# HELP pc_total Python requests\n# TYPE pc_total counter\npc_total 3.0\n\
             # HELP pc_created Python requests\n# TYPE pc_created gauge\n\
             pc_created 1.7961918398769941e+09\n",
            200,
        )
        .header("Content-Type", TEXT)
        .then(&[
            "pc_total{instance=\"\",job=\"python_counter\"} 3.0",
            "pc_created{instance=\"\",job=\"python_counter\"} 1796191839.8769941",
        ]),
        // Labels: the grouping key wins; instance="" when there is none.
        put(
            "/metrics/job/labels/instance/gi",
            "m1{instance=\"bi\",job=\"bj\",zz=\"1\"} 1\n",
            200,
        )
        .then(&["m1{instance=\"gi\",job=\"labels\",zz=\"1\"} 1.0"]),
        put(
            "/metrics/job/body_instance",
            "w{instance=\"body\",other=\"o\"} 1\nw2 2\n",
            200,
        )
        .then(&[
            "w{instance=\"body\",job=\"body_instance\",other=\"o\"} 1.0",
            "w2{instance=\"\",job=\"body_instance\"} 2.0",
        ]),
        put(
            "/metrics/job/key_label/k/v",
            "m2{k=\"body\",l=\"x\"} 1\n",
            200,
        )
        .then(&["m2{instance=\"\",job=\"key_label\",k=\"v\",l=\"x\"} 1.0"]),
        put(
            "/metrics/job/exported",
            "w{exported_job=\"q\",job=\"bj\"} 1\n",
            200,
        )
        .then(&["w{exported_job=\"q\",instance=\"\",job=\"exported\"} 1.0"]),
        put("/metrics/job/escapes", "m6{a=\"x\\\\y\\\"z\\n\"} 1\n", 200)
            .then(&["m6{a=\"x\\\\y\\\"z\\n\",instance=\"\",job=\"escapes\"} 1.0"]),
        // `@base64` values: padding optional, `=` the empty string, `/` inside.
        put("/metrics/job@base64/YS9i", "x 1\n", 200).then(&["x{instance=\"\",job=\"a/b\"} 1.0"]),
        put("/metrics/job/b64/path@base64/YS9iL2M", "x 2\n", 200)
            .then(&["x{instance=\"\",job=\"b64\",path=\"a/b/c\"} 2.0"]),
        put("/metrics/job/b64/empty@base64/=", "x 3\n", 200)
            .then(&["x{empty=\"\",instance=\"\",job=\"b64\"} 3.0"]),
        put("/metrics/job/b64/pad@base64/YQ==", "x 4\n", 200),
        post("/metrics/job/b64/pad@base64/YQ", "y 5\n", 200).then(&[
            "x{instance=\"\",job=\"b64\",pad=\"a\"} 4.0",
            "y{instance=\"\",job=\"b64\",pad=\"a\"} 5.0",
        ]),
        put("/metrics/job/b64/pad@base64/YQ=", "x 6\n", 200).then(&[
            "x{instance=\"\",job=\"b64\",pad=\"a\"} 6.0",
            "!y{instance=\"\",job=\"b64\",pad=\"a\"} 5.0",
        ]),
        put(
            "/metrics/job/pyjob/empty@base64/=/path@base64/YS9i",
            "py 1\n",
            200,
        )
        .then(&["py{empty=\"\",instance=\"\",job=\"pyjob\",path=\"a/b\"} 1.0"]),
        put("/metrics/job/b64/bad@base64/!!!", "x 1\n", 400),
        // Grouping keys that cannot be.
        put("/metrics/job/odd/a", "x 1\n", 400),
        put("/metrics/job/odd/a/b/c", "x 1\n", 400),
        put("/metrics/job/badname/1abc/v", "x 1\n", 400),
        put("/metrics/job/badname/__x/v", "x 1\n", 400),
        put("/metrics/job/badname/a-b/v", "x 1\n", 400),
        put("/metrics/job@base64/=", "x 1\n", 400),
        delete("/metrics/job/odd/a", 400),
        post("/metrics/job/b64/bad@base64/!!!", "x 1\n", 400),
        // Every type, and the special values.
        put(
            "/metrics/job/kinds",
            "# TYPE k_c counter\nk_c 1\n# TYPE k_g gauge\nk_g -2.5\n# TYPE k_u untyped\nk_u 3\n\
             k_plain 4\n# TYPE k_h histogram\nk_h_bucket{le=\"0.1\"} 1\nk_h_bucket{le=\"1\"} 3\n\
             k_h_bucket{le=\"+Inf\"} 4\nk_h_sum 2.5\nk_h_count 4\n# TYPE k_s summary\n\
             k_s{quantile=\"0.5\"} 0.2\nk_s{quantile=\"0.9\"} 0.8\nk_s_sum 10\nk_s_count 20\n",
            200,
        )
        .then(&[
            "k_h_bucket{instance=\"\",job=\"kinds\",le=\"+Inf\"} 4.0",
            "k_s{instance=\"\",job=\"kinds\",quantile=\"0.9\"} 0.8",
            "k_s_count{instance=\"\",job=\"kinds\"} 20.0",
        ]),
        put(
            "/metrics/job/special",
            "s_nan NaN\ns_pinf +Inf\ns_ninf -Inf\ns_big 1e300\ns_int 12345678901\n",
            200,
        )
        .then(&["s_nan{instance=\"\",job=\"special\"} NaN"]),
        // Timestamps, duplicates and type conflicts: refused, but the group
        // is marked as failed (and made when it was not there).
        put("/metrics/job/ts", "tsm 3 1234\n", 400).then(&[
            "push_time_seconds{instance=\"\",job=\"ts\"} 0",
            "push_failure_time_seconds{instance=\"\",job=\"ts\"} <time>",
        ]),
        put("/metrics/job/keep", "keep 1\n", 200),
        put("/metrics/job/keep", "keep 2 1234\n", 400).then(&[
            "keep{instance=\"\",job=\"keep\"} 1.0",
            "push_time_seconds{instance=\"\",job=\"keep\"} <time>",
            "push_failure_time_seconds{instance=\"\",job=\"keep\"} <time>",
        ]),
        put("/metrics/job/keep", "keep 2\nkeep 3\n", 400),
        put(
            "/metrics/job/keep",
            "keep{a=\"1\"} 1\nkeep{a=\"1\"} 2\n",
            400,
        ),
        put("/metrics/job/keep", "a 1\nb 1\na 2\n", 400)
            .then(&["keep{instance=\"\",job=\"keep\"} 1.0"]),
        put("/metrics/job/conflict1", "# TYPE tc counter\ntc 1\n", 200),
        put("/metrics/job/conflict2", "# TYPE tc gauge\ntc 1\n", 400)
            .then(&["push_time_seconds{instance=\"\",job=\"conflict2\"} 0"]),
        post("/metrics/job/conflict2", "tc 1\n", 400),
        put("/metrics/job/conflict1", "# TYPE tc gauge\ntc 2\n", 200),
        put("/metrics/job/conflict2", "# TYPE tc gauge\ntc 3\n", 200)
            .then(&["tc{instance=\"\",job=\"conflict2\"} 3.0"]),
        // Bodies that do not parse leave the store alone.
        put("/metrics/job/malformed", "this is not { valid\n", 400),
        put("/metrics/job/malformed", "ok 1", 400),
        put("/metrics/job/malformed", "ok 1\nok2 abc\n", 400),
        put(
            "/metrics/job/malformed",
            "# TYPE a counter\n# TYPE a counter\na 1\n",
            400,
        ),
        put("/metrics/job/malformed", "m5{a=\"x\",a=\"y\"} 1\n", 400)
            .then(&["!push_time_seconds{instance=\"\",job=\"malformed\"} 0"]),
        put("/metrics/job/parse_keep", "p 1\n", 200),
        put("/metrics/job/parse_keep", "p {\n", 400).then(&[
            "p{instance=\"\",job=\"parse_keep\"} 1.0",
            "push_failure_time_seconds{instance=\"\",job=\"parse_keep\"} 0",
        ]),
        // Inconsistent help is tolerated.
        put(
            "/metrics/job/help1",
            "# HELP hh first\n# TYPE hh gauge\nhh 1\n",
            200,
        ),
        put(
            "/metrics/job/help2",
            "# HELP hh second\n# TYPE hh gauge\nhh 2\n",
            200,
        ),
        // The gateway's own push time wins over a pushed one.
        put(
            "/metrics/job/own_time",
            "push_time_seconds 5\nother 1\n",
            200,
        )
        .then(&["push_time_seconds{instance=\"\",job=\"own_time\"} <time>"]),
        // Delimited protobuf.
        Step::new(
            "PUT",
            "/metrics/job/pb",
            &protobuf(
                "# HELP pbg pb help\n# TYPE pbg gauge\npbg{a=\"1\"} 2.5\n# TYPE pbc counter\n\
                 pbc 3\n# TYPE pbh histogram\npbh_bucket{le=\"1\"} 1\npbh_bucket{le=\"+Inf\"} 2\n\
                 pbh_sum 1.5\npbh_count 2\n# TYPE pbs summary\npbs{quantile=\"0.5\"} 1\n\
                 pbs_sum 3\npbs_count 4\npbu 7\n",
            ),
            200,
        )
        .header("Content-Type", PROTOBUF)
        .then(&[
            "pbg{a=\"1\",instance=\"\",job=\"pb\"} 2.5",
            "pbh_bucket{instance=\"\",job=\"pb\",le=\"1\"} 1.0",
        ]),
        Step::new(
            "POST",
            "/metrics/job/pb",
            &protobuf("# TYPE pbg gauge\npbg{a=\"2\"} 9\n"),
            200,
        )
        .header("Content-Type", PROTOBUF)
        .then(&[
            "pbg{a=\"2\",instance=\"\",job=\"pb\"} 9.0",
            "pbu{instance=\"\",job=\"pb\"} 7.0",
        ]),
        Step::new(
            "PUT",
            "/metrics/job/pb_ts",
            &protobuf_gauge("pbts", vec![gauge_metric(1.0, Some(1234))]),
            400,
        )
        .header("Content-Type", PROTOBUF),
        Step::new(
            "PUT",
            "/metrics/job/pb_dup",
            &protobuf_gauge(
                "pbd",
                vec![gauge_metric(1.0, None), gauge_metric(2.0, None)],
            ),
            400,
        )
        .header("Content-Type", PROTOBUF),
        Step::new("PUT", "/metrics/job/pb_bad", b"\x05\x0a\x03ab", 400)
            .header("Content-Type", PROTOBUF),
        Step::new("PUT", "/metrics/job/pb_bad", &[0xff; 6], 400).header("Content-Type", PROTOBUF),
        Step::new("PUT", "/metrics/job/pb_bad", b"x 1\n", 400).header("Content-Type", PROTOBUF),
        // Gzip, of text and of protobuf.
        Step::new("PUT", "/metrics/job/gz", &gzip(b"gz 1\n"), 200)
            .header("Content-Encoding", "gzip")
            .then(&["gz{instance=\"\",job=\"gz\"} 1.0"]),
        Step::new(
            "PUT",
            "/metrics/job/gz_pb",
            &gzip(&protobuf("# TYPE gzg gauge\ngzg 2\n")),
            200,
        )
        .header("Content-Type", PROTOBUF)
        .header("Content-Encoding", "gzip")
        .then(&["gzg{instance=\"\",job=\"gz_pb\"} 2.0"]),
        Step::new("PUT", "/metrics/job/gz_bad", b"garbage", 400).header("Content-Encoding", "gzip"),
        // DELETE answers 202, whether or not the group is there.
        delete("/metrics/job/emptied", 202)
            .then(&["!push_time_seconds{instance=\"\",job=\"emptied\"} <time>"]),
        delete("/metrics/job/never_pushed", 202),
        delete("/metrics/job/b64/pad@base64/YQ", 202)
            .then(&["!x{instance=\"\",job=\"b64\",pad=\"a\"} 6.0"]),
        delete("/metrics/job/keep", 202),
        // The order of requests on one group is kept.
        put("/metrics/job/order", "o 1\n", 200),
        delete("/metrics/job/order", 202),
        post("/metrics/job/order", "o2 2\n", 200).then(&[
            "!o{instance=\"\",job=\"order\"} 1.0",
            "o2{instance=\"\",job=\"order\"} 2.0",
        ]),
        delete("/metrics/job/pyjob/empty@base64/=/path@base64/YS9i", 202),
    ]
}

/// What a server made of the corpus.
struct Replay {
    /// Per step: the status and the normalised exposition afterwards.
    steps: Vec<(u16, Vec<String>)>,
    /// `/api/v1/metrics` after the last step, normalised.
    groups: Vec<String>,
    /// The status of the wipe, and the normalised exposition after it.
    wipe: (u16, Vec<String>),
}

fn replay(addr: SocketAddr, corpus: &[Step]) -> Replay {
    let steps = corpus
        .iter()
        .map(|step| {
            let response = send(addr, step.method, &step.path, &step.headers, &step.body);
            (response.status, normalised(&exposition(addr)))
        })
        .collect();
    let groups = normalised_groups(&json(addr, "/api/v1/metrics"));
    let status = json(addr, "/api/v1/status");
    assert_eq!(status["status"], "success", "{status}");
    assert!(status["data"]["build_information"].is_object(), "{status}");
    assert!(status["data"]["flags"].is_object(), "{status}");
    let wipe = send(addr, "PUT", "/api/v1/admin/wipe", &[], b"").status;
    Replay {
        steps,
        groups,
        wipe: (wipe, normalised(&exposition(addr))),
    }
}

/// The lines of `step.then` that `exposition` breaks.
fn broken_expectations(step: &Step, exposition: &[String]) -> Vec<String> {
    step.then
        .iter()
        .filter(|line| match line.strip_prefix('!') {
            Some(absent) => exposition.iter().any(|l| l == absent),
            None => !exposition.iter().any(|l| l == *line),
        })
        .map(|line| (*line).to_owned())
        .collect()
}

/// Lines in `a` and not in `b`.
fn missing_from(a: &[String], b: &[String]) -> Vec<String> {
    a.iter().filter(|line| !b.contains(line)).cloned().collect()
}

#[test]
fn the_push_api_answers_as_the_pushgateway_does() {
    let corpus = corpus();
    assert!(corpus.len() >= 40, "{} requests", corpus.len());

    // The corpus is checked against the Pushgateway first: each status and
    // expectation written in it is what the Pushgateway does.
    let pushgateway = Pushgateway::start();
    let reference = replay(pushgateway.addr, &corpus);
    drop(pushgateway);
    let mut wrong = Vec::new();
    for (i, (step, (status, lines))) in corpus.iter().zip(&reference.steps).enumerate() {
        if *status != step.status {
            wrong.push(format!(
                "#{i} {}: status {status}, not {}",
                step.describe(),
                step.status
            ));
        }
        let broken = broken_expectations(step, lines);
        if !broken.is_empty() {
            wrong.push(format!("#{i} {}: {broken:#?}", step.describe()));
        }
    }
    assert!(
        wrong.is_empty(),
        "the Pushgateway does not do what the corpus says:\n{}",
        wrong.join("\n")
    );
    assert_eq!(reference.wipe, (202, Vec::new()));

    let tether = Tether::start(&["--no-persistence", "--enable-admin-api"]);
    let observed = replay(tether.http, &corpus);
    let mut differences = Vec::new();
    // A difference in the exposition is reported where it first shows, not
    // again at every later step that inherits it.
    let mut last_difference = (Vec::new(), Vec::new());
    for (i, (step, (expected, seen))) in corpus
        .iter()
        .zip(reference.steps.iter().zip(&observed.steps))
        .enumerate()
    {
        if expected.0 != seen.0 {
            differences.push(format!(
                "#{i} {}: tether answered {}, the Pushgateway {}",
                step.describe(),
                seen.0,
                expected.0
            ));
        }
        let difference = (
            missing_from(&expected.1, &seen.1),
            missing_from(&seen.1, &expected.1),
        );
        if difference != last_difference {
            differences.push(format!(
                "#{i} {}: after it, tether lacks {:#?} and has in excess {:#?}",
                step.describe(),
                difference.0,
                difference.1
            ));
            last_difference = difference;
        }
    }
    if observed.groups != reference.groups {
        differences.push(format!(
            "/api/v1/metrics at the end: tether lacks {:#?} and has in excess {:#?}",
            missing_from(&reference.groups, &observed.groups),
            missing_from(&observed.groups, &reference.groups)
        ));
    }
    if observed.wipe != reference.wipe {
        differences.push(format!(
            "PUT /api/v1/admin/wipe: tether {:?}, the Pushgateway {:?}",
            observed.wipe, reference.wipe
        ));
    }
    assert!(
        differences.is_empty(),
        "tether differs from the Pushgateway:\n{}",
        differences.join("\n")
    );
}

// ---------------------------------------------------------------------------
// The official Python client.

/// Fails with what to do when python3 or prometheus_client is missing.
fn require_python_client() {
    let found = Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "python3 does not run ({e}): run ./scripts/test, which installs what the tests need"
            )
        });
    assert!(
        found.status.success(),
        "python3 has no prometheus_client ({}): run ./scripts/test, which installs it",
        String::from_utf8_lossy(&found.stderr).trim()
    );
}

/// What every Python step shares: the gateway's address and two registries.
const PYTHON_PRELUDE: &str = r#"
import sys
from prometheus_client import (CollectorRegistry, Counter, Gauge,
    delete_from_gateway, push_to_gateway, pushadd_to_gateway)
gateway = sys.argv[1]
KEY = {"path": "a/b", "empty": ""}

def first():
    registry = CollectorRegistry()
    Gauge("py_gauge", "Python gauge", ["kind"], registry=registry).labels("x").set(1.5)
    Counter("py_requests", "Python requests", registry=registry).inc(3)
    return registry

def other(value):
    registry = CollectorRegistry()
    Gauge("py_other", "Another gauge", registry=registry).set(value)
    return registry
"#;

/// Runs `step` with the Python client against `gateway`; it must succeed
/// (the client raises on any answer but 2xx).
fn python(gateway: SocketAddr, step: &str) {
    let output = Command::new("python3")
        .arg("-c")
        .arg(format!("{PYTHON_PRELUDE}\n{step}\n"))
        .arg(gateway.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "python: {step}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The group of `/api/v1/metrics` whose grouping key is `labels`.
fn api_group(api: &Json, labels: &Json) -> Option<Json> {
    api["data"]
        .as_array()
        .expect("data is a list of groups")
        .iter()
        .find(|group| &group["labels"] == labels)
        .cloned()
}

#[test]
fn the_official_python_client_pushes_adds_and_deletes() {
    require_python_client();
    let tether = Tether::start(&["--no-persistence"]);
    let key = serde_json::json!({"empty": "", "job": "pyjob", "path": "a/b"});
    let has = |lines: &[String], line: &str| lines.iter().any(|l| l == line);

    python(
        tether.http,
        "push_to_gateway(gateway, job='pyjob', registry=first(), grouping_key=KEY)",
    );
    let lines = normalised(&exposition(tether.http));
    for line in [
        "py_gauge{empty=\"\",instance=\"\",job=\"pyjob\",kind=\"x\",path=\"a/b\"} 1.5",
        "py_requests_total{empty=\"\",instance=\"\",job=\"pyjob\",path=\"a/b\"} 3.0",
        "push_time_seconds{empty=\"\",instance=\"\",job=\"pyjob\",path=\"a/b\"} <time>",
        "push_failure_time_seconds{empty=\"\",instance=\"\",job=\"pyjob\",path=\"a/b\"} 0",
    ] {
        assert!(has(&lines, line), "{line} not in {lines:#?}");
    }
    let api = json(tether.http, "/api/v1/metrics");
    assert_eq!(api["status"], "success", "{api}");
    let group = api_group(&api, &key).unwrap_or_else(|| panic!("no group {key} in {api}"));
    assert_eq!(group["last_push_successful"], true, "{group}");
    let gauge = &group["py_gauge"];
    assert_eq!(gauge["type"], "GAUGE", "{group}");
    assert_eq!(gauge["help"], "Python gauge", "{group}");
    assert_eq!(
        gauge["metrics"],
        serde_json::json!([{
            "labels": {"empty": "", "instance": "", "job": "pyjob", "kind": "x", "path": "a/b"},
            "value": "1.5",
        }]),
        "{group}"
    );
    assert_eq!(group["py_requests_total"]["type"], "COUNTER", "{group}");
    let pushed_at: f64 = group["push_time_seconds"]["metrics"][0]["value"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no push time in {group}"));
    assert!(pushed_at > 1e9, "{group}");

    // pushadd: POST, which replaces only the names it carries.
    python(
        tether.http,
        "pushadd_to_gateway(gateway, job='pyjob', registry=other(7), grouping_key=KEY)",
    );
    let lines = normalised(&exposition(tether.http));
    for line in [
        "py_gauge{empty=\"\",instance=\"\",job=\"pyjob\",kind=\"x\",path=\"a/b\"} 1.5",
        "py_other{empty=\"\",instance=\"\",job=\"pyjob\",path=\"a/b\"} 7.0",
    ] {
        assert!(has(&lines, line), "{line} not in {lines:#?}");
    }

    // push: PUT, which replaces the group.
    python(
        tether.http,
        "push_to_gateway(gateway, job='pyjob', registry=other(8), grouping_key=KEY)",
    );
    let lines = normalised(&exposition(tether.http));
    assert!(
        has(
            &lines,
            "py_other{empty=\"\",instance=\"\",job=\"pyjob\",path=\"a/b\"} 8.0"
        ),
        "{lines:#?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("py_gauge") || l.starts_with("py_requests")),
        "{lines:#?}"
    );
    let group = api_group(&json(tether.http, "/api/v1/metrics"), &key).expect("the group");
    assert!(group.get("py_gauge").is_none(), "{group}");
    let other: Option<f64> = group["py_other"]["metrics"][0]["value"]
        .as_str()
        .and_then(|v| v.parse().ok());
    assert_eq!(other, Some(8.0), "{group}");

    // A job with `/` and an instance with a space go as @base64; gzip.
    python(
        tether.http,
        "push_to_gateway(gateway, job='py/job', registry=other(9), \
         grouping_key={'instance': 'i 1'}, compression='gzip')",
    );
    let lines = normalised(&exposition(tether.http));
    assert!(
        has(&lines, "py_other{instance=\"i 1\",job=\"py/job\"} 9.0"),
        "{lines:#?}"
    );

    // delete: the group goes, the other stays.
    python(
        tether.http,
        "delete_from_gateway(gateway, job='pyjob', grouping_key=KEY)",
    );
    let lines = normalised(&exposition(tether.http));
    assert!(
        !lines.iter().any(|l| l.contains("job=\"pyjob\"")),
        "{lines:#?}"
    );
    assert!(
        has(&lines, "py_other{instance=\"i 1\",job=\"py/job\"} 9.0"),
        "{lines:#?}"
    );
    let api = json(tether.http, "/api/v1/metrics");
    assert!(api_group(&api, &key).is_none(), "{api}");
    assert!(
        api_group(
            &api,
            &serde_json::json!({"instance": "i 1", "job": "py/job"})
        )
        .is_some(),
        "{api}"
    );

    python(
        tether.http,
        "delete_from_gateway(gateway, job='py/job', grouping_key={'instance': 'i 1'})",
    );
    assert_eq!(normalised(&exposition(tether.http)), Vec::<String>::new());
}

// ---------------------------------------------------------------------------
// Durability.

/// A directory of its own under the system's temporary directory, removed
/// when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("tether-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("make a temporary directory");
        TempDir(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temporary path")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A disk that fills up: pushes past its room get 503 with a message that
/// says what to do, every push acknowledged before stays served, the
/// gateway keeps serving scrapes, and a push that fits is taken again once
/// groups are deleted. The store is on a tmpfs of 8 MiB mounted in a mount
/// namespace of the gateway's own (the tests run as root in CI).
#[test]
fn a_full_disk_refuses_with_503_and_loses_nothing_acknowledged() {
    let tether = Tether::start_on_small_disk(8 * 1024, &[]);
    // About 200 KB a group: the disk holds a few dozen of them.
    let body: String = (0..4000)
        .map(|i| {
            format!(
                "disk_value{{series=\"{i}\",pad=\"{}\"}} {i}\n",
                "p".repeat(24)
            )
        })
        .collect();
    let mut acknowledged = Vec::new();
    let mut refusal = None;
    for group in 0..200 {
        let path = format!("/metrics/job/disk/g/{group}");
        let response =
            request(tether.http, "PUT", &path, &[], body.as_bytes()).expect("the gateway answers");
        match response.status {
            200 => acknowledged.push(group),
            503 => {
                refusal = Some(response.text());
                break;
            }
            other => panic!("PUT {path}: {other} {}", response.text()),
        }
    }
    let refusal = refusal.unwrap_or_else(|| {
        panic!(
            "200 groups of 200 KB fit on an 8 MiB disk; acknowledged {}",
            acknowledged.len()
        )
    });
    assert!(
        refusal.contains("disk") && refusal.lines().count() == 1,
        "{refusal:?}"
    );
    assert!(acknowledged.len() >= 3, "{acknowledged:?}");
    let served = exposition(tether.http);
    let served_groups: std::collections::BTreeSet<String> = samples(&served)
        .into_iter()
        .filter(|s| s.name == "disk_value")
        .filter_map(|s| s.label("g").map(str::to_owned))
        .collect();
    let expected: std::collections::BTreeSet<String> =
        acknowledged.iter().map(ToString::to_string).collect();
    assert_eq!(
        served_groups, expected,
        "served groups are the acknowledged ones"
    );
    let health = request(tether.http, "GET", "/-/healthy", &[], b"").expect("health");
    assert_eq!(health.status, 200);
    // Room made, a small push is taken again.
    for group in &acknowledged[..acknowledged.len() / 2] {
        let path = format!("/metrics/job/disk/g/{group}");
        let _ = request(tether.http, "DELETE", &path, &[], b"").expect("the gateway answers");
    }
    let again = request(
        tether.http,
        "PUT",
        "/metrics/job/disk/g/small",
        &[],
        b"small 1\n",
    )
    .expect("the gateway answers");
    assert_eq!(again.status, 200, "{}", again.text());
    drop(tether);
    let _ = std::fs::remove_dir(
        std::env::temp_dir().join(format!("tether-small-disk-{}", std::process::id())),
    );
}

/// The value of `name` in each group `job="crash",g=...` of the exposition.
fn values_by_group(exposition: &str, name: &str) -> HashMap<String, f64> {
    samples(exposition)
        .into_iter()
        .filter(|s| s.name == name && s.label("job") == Some("crash"))
        .filter_map(|s| {
            let group = s.label("g")?.to_owned();
            Some((group, s.value.parse().ok()?))
        })
        .collect()
}

/// What one pusher did before the gateway went away.
struct Pushed {
    /// Acknowledged pushes, in order: group and value.
    acknowledged: Vec<(String, f64)>,
    /// The push that was sent but not answered, if any.
    in_flight: Option<(String, f64)>,
    /// Answers that were neither 2xx nor a connection lost.
    refused: Vec<String>,
}

/// Pushes `crash_value` to new groups and, every fourth push, to an older
/// one, until the gateway stops answering; each acknowledgement is also sent
/// on `acks`.
fn pusher(addr: SocketAddr, round: u32, thread: u32, acks: &mpsc::Sender<()>) -> Pushed {
    let mut pushed = Pushed {
        acknowledged: Vec::new(),
        in_flight: None,
        refused: Vec::new(),
    };
    for k in 0u32.. {
        let n = if k % 4 == 3 { k / 2 } else { k };
        let group = format!("r{round}-t{thread}-{n}");
        let value = f64::from(round * 10_000_000 + thread * 1_000_000 + k);
        let path = format!("/metrics/job/crash/g/{group}");
        let body = format!("crash_value {value}\n");
        match request(addr, "PUT", &path, &[], body.as_bytes()) {
            Ok(response) if (200..300).contains(&response.status) => {
                pushed.acknowledged.push((group, value));
                let _ = acks.send(());
            }
            Ok(response) => {
                pushed.refused.push(format!(
                    "PUT {path}: {} {}",
                    response.status,
                    response.text()
                ));
                break;
            }
            Err(_) => {
                pushed.in_flight = Some((group, value));
                break;
            }
        }
    }
    pushed
}

/// Per group: the value last acknowledged, and values pushed after it whose
/// answer was lost, which may have been stored too.
#[derive(Default)]
struct Durable {
    acknowledged: Option<f64>,
    maybe: Vec<f64>,
}

#[test]
fn every_acknowledged_push_survives_a_crash() {
    const ROUNDS: u32 = 3;
    const N_PUSHERS: u32 = 4;
    const ACKS_BEFORE_KILL: usize = 500;
    let dir = TempDir::new("push-crash");
    let mut expected: BTreeMap<String, Durable> = BTreeMap::new();
    for round in 0..ROUNDS {
        let mut tether = Tether::start(&["--data-dir", dir.arg()]);
        // What earlier rounds acknowledged is all there.
        let found = values_by_group(&exposition(tether.http), "crash_value");
        let mut lost = Vec::new();
        for (group, durable) in &mut expected {
            let now = found.get(group).copied();
            let fine = match (durable.acknowledged, now) {
                (_, Some(value)) if durable.maybe.contains(&value) => true,
                (Some(acknowledged), now) => now == Some(acknowledged),
                (None, now) => now.is_none(),
            };
            if !fine {
                lost.push(format!(
                    "{group}: {now:?}, acknowledged {:?} (or one of {:?})",
                    durable.acknowledged, durable.maybe
                ));
            }
            // What is there now is what the next round must find.
            durable.acknowledged = now;
            durable.maybe.clear();
        }
        assert!(
            lost.is_empty(),
            "round {round}: after a crash the gateway lost {} acknowledged pushes, among them:\n{}",
            lost.len(),
            lost[..lost.len().min(20)].join("\n")
        );

        let (acks_tx, acks_rx) = mpsc::channel();
        let pushers: Vec<_> = (0..N_PUSHERS)
            .map(|thread| {
                let acks = acks_tx.clone();
                let addr = tether.http;
                std::thread::spawn(move || pusher(addr, round, thread, &acks))
            })
            .collect();
        drop(acks_tx);
        for n in 0..ACKS_BEFORE_KILL {
            acks_rx.recv_timeout(DEADLINE).unwrap_or_else(|_| {
                panic!("round {round}: only {n} pushes acknowledged within {DEADLINE:?}")
            });
        }
        // The pushers are still pushing.
        tether.crash();
        let mut n_acknowledged = 0;
        for pusher in pushers {
            let pushed = pusher.join().expect("a pusher");
            assert!(
                pushed.refused.is_empty(),
                "pushes refused: {:?}",
                pushed.refused
            );
            n_acknowledged += pushed.acknowledged.len();
            for (group, value) in pushed.acknowledged {
                let durable = expected.entry(group).or_default();
                durable.acknowledged = Some(value);
                durable.maybe.clear();
            }
            if let Some((group, value)) = pushed.in_flight {
                expected.entry(group).or_default().maybe.push(value);
            }
        }
        assert!(n_acknowledged >= ACKS_BEFORE_KILL, "{n_acknowledged}");
    }
    let tether = Tether::start(&["--data-dir", dir.arg()]);
    let found = values_by_group(&exposition(tether.http), "crash_value");
    let lost: Vec<String> = expected
        .iter()
        .filter(|(group, durable)| {
            let now = found.get(*group).copied();
            !(now.is_some_and(|v| durable.maybe.contains(&v)) || now == durable.acknowledged)
        })
        .map(|(group, durable)| {
            format!(
                "{group}: {:?}, acknowledged {:?} (or one of {:?})",
                found.get(group),
                durable.acknowledged,
                durable.maybe
            )
        })
        .collect();
    assert!(
        lost.is_empty(),
        "after the last crash the gateway lost {} acknowledged pushes, among them:\n{}",
        lost.len(),
        lost[..lost.len().min(20)].join("\n")
    );
    assert!(
        expected.len() >= ACKS_BEFORE_KILL,
        "{} groups",
        expected.len()
    );
}

/// Every regular file under `dir`, with its length.
fn files_under(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read the data directory") {
            let entry = entry.expect("a directory entry");
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                dirs.push(entry.path());
            } else if meta.is_file() {
                files.push((entry.path(), meta.len()));
            }
        }
    }
    files
}

#[test]
fn a_corrupt_store_is_moved_aside_and_a_new_one_serves() {
    let dir = TempDir::new("push-corrupt");
    {
        let tether = Tether::start(&["--data-dir", dir.arg()]);
        let pushed = send(
            tether.http,
            "PUT",
            "/metrics/job/before",
            &[],
            b"before 1\n",
        );
        assert_eq!(pushed.status, 200, "{}", pushed.text());
    }
    // The store is the largest file the gateway wrote.
    let (store, _) = files_under(&dir.0)
        .into_iter()
        .max_by_key(|(_, len)| *len)
        .unwrap_or_else(|| panic!("the gateway wrote no file in {}", dir.0.display()));
    let garbage: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&store, &garbage).expect("corrupt the store");

    let tether = Tether::start(&["--data-dir", dir.arg()]);
    let error = tether.wait_for_log("at ERROR level", |line| line.contains("ERROR"));
    let aside: Vec<PathBuf> = files_under(&dir.0)
        .into_iter()
        .map(|(path, _)| path)
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().contains("corrupt"))
        })
        .collect();
    assert_eq!(aside.len(), 1, "files moved aside: {aside:?}; log: {error}");
    assert_eq!(
        aside[0].parent(),
        store.parent(),
        "moved beside the store: {aside:?}"
    );
    assert_eq!(
        std::fs::read(&aside[0]).expect("read the file moved aside"),
        garbage,
        "the corrupt store is kept as it was"
    );
    let pushed = send(tether.http, "PUT", "/metrics/job/after", &[], b"after 2\n");
    assert_eq!(pushed.status, 200, "{}", pushed.text());
    let lines = normalised(&exposition(tether.http));
    assert!(
        lines.contains(&"after{instance=\"\",job=\"after\"} 2.0".to_owned()),
        "{lines:#?}"
    );
    drop(tether);

    // The new store is a good one: what was pushed to it stays.
    let tether = Tether::start(&["--data-dir", dir.arg()]);
    let lines = normalised(&exposition(tether.http));
    assert!(
        lines.contains(&"after{instance=\"\",job=\"after\"} 2.0".to_owned()),
        "{lines:#?}"
    );
    let n_aside = files_under(&dir.0)
        .iter()
        .filter(|(path, _)| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().contains("corrupt"))
        })
        .count();
    assert_eq!(n_aside, 1, "{:?}", files_under(&dir.0));
}

// ---------------------------------------------------------------------------
// Limits.

/// How a large body goes.
#[derive(Clone, Copy)]
enum Framing {
    ContentLength,
    Chunked,
}

/// Sends `PUT path` with `headers` and `total` bytes of `pattern` repeated,
/// reading the answer while the body is still being written; the status.
fn put_streamed(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    pattern: &[u8],
    total: u64,
    framing: Framing,
) -> u16 {
    // Whole patterns only, so that the body is whole lines.
    let total = total / pattern.len() as u64 * pattern.len() as u64;
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_write_timeout(Some(DEADLINE)).expect("timeout");
    let mut reader = stream.try_clone().expect("clone the stream");
    reader.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let answer = std::thread::spawn(move || {
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
        // Stop the writer: the answer is in.
        let _ = reader.shutdown(Shutdown::Both);
        raw
    });
    let mut head = format!("PUT {path} HTTP/1.1\r\nHost: tether\r\nConnection: close\r\n");
    match framing {
        Framing::ContentLength => head.push_str(&format!("Content-Length: {total}\r\n")),
        Framing::Chunked => head.push_str("Transfer-Encoding: chunked\r\n"),
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let chunk = pattern.repeat((1 << 20) / pattern.len());
    let write_body = |stream: &mut TcpStream| -> std::io::Result<()> {
        stream.write_all(head.as_bytes())?;
        let mut left = total;
        while left > 0 {
            let n = usize::try_from(left.min(chunk.len() as u64)).expect("a chunk fits");
            match framing {
                Framing::ContentLength => stream.write_all(&chunk[..n])?,
                Framing::Chunked => {
                    stream.write_all(format!("{n:x}\r\n").as_bytes())?;
                    stream.write_all(&chunk[..n])?;
                    stream.write_all(b"\r\n")?;
                }
            }
            left -= n as u64;
        }
        if let Framing::Chunked = framing {
            stream.write_all(b"0\r\n\r\n")?;
        }
        stream.flush()
    };
    // The gateway may answer and close before the body is all sent.
    let _ = write_body(&mut stream);
    let raw = answer.join().expect("the reader");
    crate::support::parse_response(&raw)
        .map(|response| response.status)
        .unwrap_or_else(|e| {
            panic!(
                "PUT {path}: no answer ({e}): {:?}",
                String::from_utf8_lossy(&raw)
            )
        })
}

#[test]
fn oversized_bodies_and_gzip_bombs_are_refused_with_413_in_bounded_memory() {
    let tether = Tether::start(&["--no-persistence"]);
    // Comment lines: a valid exposition, too large only.
    let comments = b"# a comment that pads the body out, line after line, to its size\n";
    let big = 256 * MIB;
    let status = put_streamed(
        tether.http,
        "/metrics/job/too_large",
        &[],
        comments,
        big,
        Framing::ContentLength,
    );
    assert_eq!(status, 413, "a body of {big} bytes with its length");
    let status = put_streamed(
        tether.http,
        "/metrics/job/too_large",
        &[],
        comments,
        big,
        Framing::Chunked,
    );
    assert_eq!(status, 413, "a chunked body of {big} bytes");

    // 1 GiB of newlines in about a megabyte.
    let bomb = gzip_bomb(1 << 30);
    let answer = send(
        tether.http,
        "PUT",
        "/metrics/job/bomb",
        &[("Content-Encoding", "gzip")],
        &bomb,
    );
    assert_eq!(answer.status, 413, "a gzip bomb: {}", answer.text());
    let answer = send(
        tether.http,
        "PUT",
        "/metrics/job/bomb",
        &[("Content-Encoding", "gzip"), ("Content-Type", PROTOBUF)],
        &bomb,
    );
    assert_eq!(
        answer.status,
        413,
        "a gzip bomb as protobuf: {}",
        answer.text()
    );

    let peak = tether.peak_memory();
    assert!(
        peak < MAX_PEAK_MEMORY,
        "the gateway peaked at {} MiB",
        peak / MIB
    );
    // Nothing of the refused pushes is kept, and the gateway still serves.
    let pushed = send(tether.http, "PUT", "/metrics/job/small", &[], b"small 1\n");
    assert_eq!(pushed.status, 200, "{}", pushed.text());
    let lines = normalised(&exposition(tether.http));
    assert!(
        lines.contains(&"small{instance=\"\",job=\"small\"} 1.0".to_owned()),
        "{lines:#?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("job=\"too_large\"") || l.contains("job=\"bomb\"")),
        "{lines:#?}"
    );
}

#[test]
fn framed_snappy_bodies_are_taken() {
    // The Pushgateway 1.5.1 ignores `Content-Encoding: snappy`, so this is
    // checked against tether alone.
    let tether = Tether::start(&["--no-persistence"]);
    let body = snappy_framed(b"# TYPE sn gauge\nsn{a=\"1\"} 1.5\n");
    let pushed = send(
        tether.http,
        "PUT",
        "/metrics/job/snappy",
        &[("Content-Encoding", "snappy")],
        &body,
    );
    assert_eq!(pushed.status, 200, "{}", pushed.text());
    let body = snappy_framed(&protobuf("# TYPE snp counter\nsnp 4\n"));
    let pushed = send(
        tether.http,
        "POST",
        "/metrics/job/snappy",
        &[("Content-Encoding", "snappy"), ("Content-Type", PROTOBUF)],
        &body,
    );
    assert_eq!(pushed.status, 200, "{}", pushed.text());
    let lines = normalised(&exposition(tether.http));
    for line in [
        "sn{a=\"1\",instance=\"\",job=\"snappy\"} 1.5",
        "snp{instance=\"\",job=\"snappy\"} 4.0",
    ] {
        assert!(lines.contains(&line.to_owned()), "{line} not in {lines:#?}");
    }
    // A body that is not framed snappy is malformed.
    let refused = send(
        tether.http,
        "PUT",
        "/metrics/job/snappy",
        &[("Content-Encoding", "snappy")],
        b"sn 1\n",
    );
    assert_eq!(refused.status, 400, "{}", refused.text());
}
