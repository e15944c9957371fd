//! `tether check` over the conformance corpus of tether-model, and its
//! exit statuses, output streams and options.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn tether() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tether"))
}

/// Runs `tether check` with `args`, feeding `stdin`.
fn run_check(args: &[&str], stdin: &[u8]) -> Output {
    let stdin = stdin.to_vec();
    run_check_streamed(args, move |input| input.write_all(&stdin))
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tether-model/tests/corpus")
}

/// The `.prom` files of one corpus folder, sorted, with their sidecars.
fn cases(format: &str, validity: &str) -> Vec<PathBuf> {
    let dir = corpus_dir().join(format).join(validity);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "prom"))
        .collect();
    files.sort();
    files
}

/// Command-line options for a case with a `.limits` sidecar
/// (`key=value` lines naming `Limits` fields).
fn limit_args(case: &Path) -> Option<Vec<String>> {
    let text = fs::read_to_string(case.with_extension("limits")).ok()?;
    let mut args = Vec::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (key, value) = line.split_once('=').expect("limits lines are key=value");
        match key.trim() {
            "max_line_bytes" => args.push(format!("--max-line-bytes={}", value.trim())),
            "max_labels_per_series" => {
                args.push(format!("--max-labels-per-series={}", value.trim()));
            }
            // Limits the command has no option for are covered by the
            // library's own corpus test.
            _ => return None,
        }
    }
    Some(args)
}

#[test]
fn accepts_every_valid_case_of_the_corpus() {
    let mut failures = Vec::new();
    let mut n_cases = 0;
    for format in ["text", "openmetrics"] {
        for case in cases(format, "valid") {
            let input = fs::read(&case).expect("read case");
            let mut args = vec![format!("--format={format}")];
            if case.with_extension("limits").exists() {
                match limit_args(&case) {
                    Some(extra) => args.extend(extra),
                    None => continue,
                }
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let output = run_check(&args, &input);
            n_cases += 1;
            if output.status.code() != Some(0) || !output.stdout.is_empty() {
                failures.push(format!(
                    "{}: exit {:?}, stdout: {}",
                    case.display(),
                    output.status.code(),
                    String::from_utf8_lossy(&output.stdout)
                ));
            }
        }
    }
    assert!(
        n_cases >= 40,
        "only {n_cases} valid cases found in {}",
        corpus_dir().display()
    );
    assert!(
        failures.is_empty(),
        "{} valid cases rejected:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn rejects_every_invalid_case_of_the_corpus_at_its_position() {
    let mut failures = Vec::new();
    let mut n_cases = 0;
    for format in ["text", "openmetrics"] {
        for case in cases(format, "invalid") {
            let input = fs::read(&case).expect("read case");
            let expected = fs::read_to_string(case.with_extension("err"))
                .expect("every invalid case has a .err file");
            let expected = expected.trim();
            let (position, message) = expected.split_once(": ").unwrap_or((expected, ""));
            let mut args = vec![format!("--format={format}")];
            if case.with_extension("limits").exists() {
                match limit_args(&case) {
                    Some(extra) => args.extend(extra),
                    None => continue,
                }
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let output = run_check(&args, &input);
            n_cases += 1;
            let stdout = String::from_utf8_lossy(&output.stdout);
            let first = stdout.lines().next().unwrap_or("");
            let position_ok = first.starts_with(&format!("{position}: "));
            if output.status.code() != Some(1) || !position_ok || !first.contains(message) {
                failures.push(format!(
                    "{}: expected exit 1 and \"{expected}\", got exit {:?} and \"{first}\"",
                    case.display(),
                    output.status.code()
                ));
            }
        }
    }
    assert!(
        n_cases >= 40,
        "only {n_cases} invalid cases found in {}",
        corpus_dir().display()
    );
    assert!(
        failures.is_empty(),
        "{} invalid cases misreported:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn reports_every_error_not_just_the_first() {
    let input = b"ok 1\nbad{ 1\nalso_ok 2\nworse 1 2 3\n";
    let output = run_check(&["--format=text"], input);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with("2:6: "), "{stdout}");
    assert!(lines[1].starts_with("4:11: "), "{stdout}");
}

#[test]
fn detects_openmetrics_by_its_eof_line() {
    // Valid only as OpenMetrics: a counter sample with `_total` under a
    // family declared without it.
    let input = b"# TYPE requests counter\n# HELP requests Requests.\nrequests_total 1\n# EOF\n";
    let output = run_check(&[], input);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("OpenMetrics"));
    // The same bytes as text: `# EOF` is a comment, and the sample is an
    // untyped family of its own, so it is still valid text.
    let output = run_check(&["--format=text"], input);
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stderr).contains("text 0.0.4"));
}

#[test]
fn lint_findings_warn_on_stderr_and_fail_only_with_strict() {
    let input = b"# TYPE requests counter\nrequests 1\n";
    let output = run_check(&[], input);
    assert_eq!(output.status.code(), Some(0));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("1:1: warning:") && stderr.contains("[counter-suffix]"),
        "{stderr}"
    );
    assert!(stderr.contains("[help]"), "{stderr}");

    let output = run_check(&["--strict"], input);
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn reads_a_file_argument_and_reports_unreadable_ones_as_usage_errors() {
    let dir = std::env::temp_dir().join(format!("tether-check-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("metrics.prom");
    fs::write(&file, b"# HELP up Up.\n# TYPE up gauge\nup 1\n").expect("write file");
    let output = run_check(&[file.to_str().expect("utf-8 path")], b"");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let missing = dir.join("missing.prom");
    let output = run_check(&[missing.to_str().expect("utf-8 path")], b"");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read"));
    fs::remove_dir_all(&dir).expect("remove temp dir");
}

#[test]
fn usage_errors_exit_with_status_2() {
    let output = run_check(&["--format=yaml"], b"");
    assert_eq!(output.status.code(), Some(2));
    let output = run_check(&["--no-such-flag"], b"");
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn collisions_and_reserved_names_a_merge_refuses_are_reported() {
    // (input, expected on stderr); each is valid text, so a warning.
    let cases: [(&str, &str); 4] = [
        (
            "# TYPE x_total counter\nx_total 1\n# TYPE x gauge\nx 2\n",
            "3:1: warning: family \"x\" (gauge) is the same family with another type family \"x_total\" (counter) of line 1",
        ),
        (
            "# TYPE hh histogram\nhh_bucket{le=\"+Inf\"} 1\nhh_count 1\nhh_sum 1\n# TYPE hh_count_x gauge\nhh_count_x 1\n",
            "",
        ),
        (
            "# TYPE g gauge\ng{__secret=\"1\"} 1\n",
            "1:1: warning: family \"g\" has a series with label \"__secret\"",
        ),
        (
            "# TYPE c counter\nc 1\n# TYPE c_total gauge\nc_total 2\n",
            "warning: family \"c_total\" (gauge) writes a sample name of family \"c\" (counter)",
        ),
    ];
    for (input, expected) in cases {
        let output = run_check(&["--format", "text"], input.as_bytes());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{input}\n{stderr}");
        assert!(stderr.contains(expected), "{input}\n{stderr}");
        if expected.is_empty() {
            assert!(!stderr.contains("[merge-collision]"), "{input}\n{stderr}");
        }
        // --strict fails on them, as on any warning.
        let strict = run_check(&["--format", "text", "--strict"], input.as_bytes());
        assert_eq!(strict.status.code(), Some(1), "{input}");
    }
    let output = run_check(
        &["--format", "text"],
        b"# HELP tether_agent_up Up.\n# TYPE tether_agent_up gauge\ntether_agent_up 1\n",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "a warning, not an error");
    assert!(stderr.contains("[reserved-name]"), "{stderr}");
}

/// Runs `tether check` with `args`, writing `write_input`'s bytes to its
/// standard input from a thread of its own while the output is read.
fn run_check_streamed(
    args: &[&str],
    write_input: impl FnOnce(&mut dyn Write) -> std::io::Result<()> + Send + 'static,
) -> Output {
    let mut child = tether()
        .arg("check")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tether");
    let mut stdin = child.stdin.take().expect("stdin was piped");
    let writer = std::thread::spawn(move || {
        let mut buffered = std::io::BufWriter::with_capacity(1 << 16, &mut stdin);
        write_input(&mut buffered).and_then(|()| buffered.flush())
    });
    let output = child.wait_with_output().expect("wait for tether");
    writer
        .join()
        .expect("the writer does not panic")
        .expect("tether reads all of its input");
    output
}

#[test]
fn two_million_series_of_one_family_through_a_pipe_with_duplicates_far_apart() {
    const N_SERIES: u32 = 2_000_000;
    let output = run_check_streamed(&[], |input| {
        writeln!(input, "# HELP big_gauge One gauge, many series.")?;
        writeln!(input, "# TYPE big_gauge gauge")?;
        for i in 0..N_SERIES {
            writeln!(input, "big_gauge{{instance=\"host-{i}\",job=\"api\"}} {i}")?;
            if i == N_SERIES / 2 {
                // Series 7 again, a million lines after it.
                writeln!(input, "big_gauge{{job=\"api\",instance=\"host-7\"}} 0")?;
            }
        }
        // The first series again, at the very end.
        writeln!(input, "big_gauge{{instance=\"host-0\",job=\"api\"}} 0")
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stdout.lines().collect();
    let middle = N_SERIES / 2 + 4;
    let last = N_SERIES + 4;
    assert_eq!(errors.len(), 2, "{stdout}");
    assert!(
        errors[0].starts_with(&format!("{middle}:1: "))
            && errors[0].contains("duplicate")
            && errors[0].contains("host-7"),
        "{stdout}"
    );
    assert!(
        errors[1].starts_with(&format!("{last}:1: ")) && errors[1].contains("host-0"),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!(
            "<stdin>: invalid text 0.0.4: 1 families, {N_SERIES} series, 2 errors, 0 warnings"
        )),
        "{stderr}"
    );
}

#[test]
fn a_line_over_the_limit_in_a_long_input_is_reported_and_the_rest_checked() {
    // A 3 MB line, over the 1 MiB default, between valid lines, then a
    // duplicate: the long line is one error and is not held whole.
    let output = run_check_streamed(&["--format=text"], |input| {
        writeln!(input, "# TYPE g gauge")?;
        for i in 0..1000 {
            writeln!(input, "g{{i=\"{i}\"}} 1")?;
        }
        write!(input, "g{{i=\"")?;
        let chunk = "x".repeat(1 << 16);
        for _ in 0..48 {
            input.write_all(chunk.as_bytes())?;
        }
        writeln!(input, "\"}} 1")?;
        writeln!(input, "g{{i=\"3\"}} 2")
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(lines.len(), 2, "{stdout}");
    let limit = tether_model::DEFAULT_MAX_LINE_BYTES;
    assert!(
        lines[0].starts_with(&format!("1002:{}: ", limit + 1)) && lines[0].contains("longer"),
        "{stdout}"
    );
    assert!(lines[1].starts_with("1003:1: "), "{stdout}");
}

#[test]
fn malformed_input_is_reported_at_its_position_when_streamed() {
    // (input, args, expected first line of stdout)
    let cases: [(Vec<u8>, &[&str], &str); 5] = [
        // Not UTF-8 after many valid lines: that error alone.
        (
            {
                let mut input = b"# TYPE g gauge\n".to_vec();
                for i in 0..50_000 {
                    input.extend_from_slice(format!("g{{i=\"{i}\"}} 1\n").as_bytes());
                }
                input.extend_from_slice(b"g{i=\"\xff\"} 1\nbad{ 1\n");
                input
            },
            &["--format=text"],
            "50002:6: ",
        ),
        // No newline at the end.
        (b"# TYPE g gauge\ng 1".to_vec(), &["--format=text"], "2:4: "),
        // OpenMetrics without its `# EOF`.
        (
            b"# TYPE g gauge\ng 1\n".to_vec(),
            &["--format=openmetrics"],
            "3:1: ",
        ),
        // Content after `# EOF`, detected as text (the last line is not
        // `# EOF`): valid text would exit 0, so make it invalid text.
        (b"g 1\n# EOF\nbad{ 1\n".to_vec(), &[], "3:6: "),
        // Binary garbage.
        (vec![0x00, 0x01, 0x7b, 0x0a], &["--format=text"], "1:1: "),
    ];
    for (input, args, expected) in cases {
        let expected_pipe = run_check(args, &input);
        let stdout = String::from_utf8_lossy(&expected_pipe.stdout);
        assert_eq!(expected_pipe.status.code(), Some(1), "{args:?}: {stdout}");
        assert!(
            stdout
                .lines()
                .next()
                .is_some_and(|line| line.starts_with(expected)),
            "{args:?}: expected {expected}, got {stdout}"
        );
    }
}

#[test]
fn a_file_and_a_pipe_are_detected_alike() {
    let dir = std::env::temp_dir().join(format!("tether-check-detect-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    let inputs: [&[u8]; 3] = [
        b"# TYPE requests counter\nrequests_total 1\n# EOF\n",
        b"# TYPE requests counter\nrequests 1\n",
        b"# TYPE requests counter\nrequests 1\n# EOF\n",
    ];
    for (i, input) in inputs.iter().enumerate() {
        let file = dir.join(format!("{i}.prom"));
        fs::write(&file, input).expect("write file");
        let from_file = run_check(&[file.to_str().expect("utf-8 path")], b"");
        let from_pipe = run_check(&[], input);
        // Standard input redirected from the file, as `< file` does.
        let redirected = tether()
            .arg("check")
            .stdin(fs::File::open(&file).expect("open file"))
            .output()
            .expect("run tether");
        let summary = |output: &Output| {
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            let verdict = stderr.lines().last().unwrap_or("").to_owned();
            // The source differs; the verdict after it does not.
            verdict.split_once(": ").map(|(_, rest)| rest.to_owned())
        };
        for output in [&from_file, &redirected] {
            assert_eq!(output.status.code(), from_pipe.status.code(), "case {i}");
            assert_eq!(output.stdout, from_pipe.stdout, "case {i}");
            assert_eq!(summary(output), summary(&from_pipe), "case {i}");
        }
    }
    fs::remove_dir_all(&dir).expect("remove temp dir");
}
