//! The push routes through the router, without a socket: the
//! Pushgateway's answers, limits, TTL expiry in paused time, and the
//! store across a restart.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt as _;

use super::*;
use crate::sources::{Scope, ScrapeRequest, Source};

fn settings(raw: RawConfig) -> PushSettings {
    PushSettings::from_raw(&RawConfig {
        no_persistence: Some(raw.data_dir.is_none()),
        ..raw
    })
    .expect("as the test set it up")
}

fn source(raw: RawConfig) -> Arc<PushSource> {
    // These tests read the routes' answers, not the metrics.
    Arc::new(
        PushSource::open(settings(raw), &metrics::NoopRecorder, Vec::new())
            .expect("as the test set it up"),
    )
}

async fn send(
    source: &Arc<PushSource>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> (StatusCode, String) {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = api::router(Arc::clone(source))
        .oneshot(request.body(body.into()).expect("as the test set it up"))
        .await
        .expect("as the test set it up");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
        .await
        .expect("as the test set it up");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// `name{labels} value` of every series served, target labels first.
async fn served(source: &PushSource) -> Vec<String> {
    let parts = source
        .collect(ScrapeRequest {
            scope: Scope::All,
            deadline: tokio::time::Instant::now() + Duration::from_secs(1),
        })
        .await;
    let mut lines = Vec::new();
    for part in parts {
        for family in part.families.as_slice() {
            if family.name.starts_with("push_") {
                continue;
            }
            for series in &family.series {
                let labels: Vec<String> = part
                    .target
                    .iter()
                    .flat_map(|t| t.labels().iter())
                    .chain(series.labels.iter())
                    .map(|l| format!("{}={}", l.name, l.value))
                    .collect();
                let value = match &series.value {
                    tether_model::Value::Single(v) => v.to_string(),
                    tether_model::Value::Counter(c) => c.total.to_string(),
                    other => format!("{other:?}"),
                };
                lines.push(format!("{}{{{}}} {value}", family.name, labels.join(",")));
            }
        }
    }
    lines
}

#[tokio::test]
async fn the_pushgateway_api_answers_as_the_pushgateway() {
    let source = source(RawConfig::default());
    let cases: [(&str, &str, &str, StatusCode); 9] = [
        (
            "PUT",
            "/metrics/job/a/instance/i",
            "x{job=\"body\"} 1\n",
            StatusCode::OK,
        ),
        ("POST", "/metrics/job/a/instance/i", "y 2\n", StatusCode::OK),
        (
            "PUT",
            "/metrics/job/b",
            "x 1 1000\n",
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            "/metrics/job/b",
            "# TYPE x counter\nx 1\n",
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            "/metrics/job/b",
            "bad line\n",
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            "/metrics/job/b/odd",
            "x 1\n",
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            "/metrics/job/b/l@base64/YS9i",
            "z 1\n",
            StatusCode::OK,
        ),
        ("DELETE", "/metrics/job/nobody", "", StatusCode::ACCEPTED),
        ("PUT", "/api/v1/admin/wipe", "", StatusCode::NOT_FOUND),
    ];
    for (method, path, body, status) in cases {
        let (got, text) = send(&source, method, path, &[], body.to_owned()).await;
        assert_eq!(got, status, "{method} {path} {body:?}: {text}");
        if status == StatusCode::BAD_REQUEST {
            assert!(
                text.ends_with('\n') && text.lines().count() == 1,
                "{text:?}"
            );
        }
    }
    assert_eq!(
        served(&source).await,
        [
            "x{instance=i,job=a} 1",
            "y{instance=i,job=a} 2",
            "z{instance=,job=b,l=a/b} 1"
        ]
    );
    let (status, json) = send(&source, "GET", "/api/v1/metrics", &[], "").await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_str(&json).expect("as the test set it up");
    let groups = json["data"].as_array().expect("as the test set it up");
    // The two groups, and {job=b} created by its failed pushes.
    assert_eq!(groups.len(), 3);
    let failed = groups
        .iter()
        .find(|g| g["labels"] == serde_json::json!({"job": "b"}))
        .expect("as the test set it up");
    assert_eq!(failed["last_push_successful"], false);
    assert_eq!(failed["push_time_seconds"]["metrics"][0]["value"], "0");
    let a = groups
        .iter()
        .find(|g| g["labels"]["job"] == "a")
        .expect("as the test set it up");
    assert_eq!(a["x"]["type"], "UNTYPED");
    assert_eq!(a["x"]["metrics"][0]["labels"]["instance"], "i");
}

#[tokio::test]
async fn a_post_with_its_own_instances_keeps_the_empty_one_of_the_others() {
    let source = source(RawConfig::default());
    send(&source, "PUT", "/metrics/job/m", &[], "x 1\n").await;
    let (status, _) = send(
        &source,
        "POST",
        "/metrics/job/m",
        &[],
        "y{instance=\"mine\"} 2\n",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        served(&source).await,
        ["x{job=m,instance=} 1", "y{job=m,instance=mine} 2"]
    );
    let (status, _) = send(&source, "POST", "/metrics/job/m", &[], "y 3\n").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        served(&source).await,
        ["x{job=m,instance=} 1", "y{job=m,instance=} 3"]
    );
}

#[tokio::test]
async fn limits_answer_413_and_429_and_bombs_cost_their_bound() {
    let source = source(RawConfig {
        push_max_body_bytes: Some(1024),
        push_max_bytes_in_flight: Some(1 << 20),
        push_max_decompressed_bytes: Some(4096),
        push_max_groups: Some(1),
        ..RawConfig::default()
    });
    let big = "x 1\n".repeat(300);
    let (status, _) = send(&source, "PUT", "/metrics/job/a", &[], big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gzip, &vec![b'#'; 512 << 10]).expect("as the test set it up");
    let bomb = gzip.finish().expect("as the test set it up");
    assert!(bomb.len() < 1024);
    let (status, text) = send(
        &source,
        "PUT",
        "/metrics/job/a",
        &[("content-encoding", "gzip")],
        bomb,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert_eq!(
        send(&source, "PUT", "/metrics/job/a", &[], "x 1\n").await.0,
        StatusCode::OK
    );
    let (status, text) = send(&source, "PUT", "/metrics/job/b", &[], "x 1\n").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{text}");
    assert!(text.contains("--push-max-groups"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn groups_expire_after_their_ttl() {
    let source = source(RawConfig {
        push_ttl_secs: Some(60),
        ..RawConfig::default()
    });
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(Arc::clone(&source).run(shutdown.clone()));
    send(&source, "PUT", "/metrics/job/default", &[], "x 1\n").await;
    send(
        &source,
        "PUT",
        "/metrics/job/short",
        &[(api::TTL_HEADER, "10")],
        "x 1\n",
    )
    .await;
    send(
        &source,
        "PUT",
        "/metrics/job/forever",
        &[(api::TTL_HEADER, "0")],
        "x 1\n",
    )
    .await;
    assert_eq!(served(&source).await.len(), 3);
    tokio::time::sleep(Duration::from_secs(11)).await;
    let jobs = |lines: Vec<String>| -> Vec<String> {
        lines
            .into_iter()
            .map(|l| {
                l.split("job=")
                    .nth(1)
                    .unwrap_or("")
                    .split([',', '}'])
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(jobs(served(&source).await), ["default", "forever"]);
    tokio::time::sleep(Duration::from_secs(50)).await;
    assert_eq!(jobs(served(&source).await), ["forever"]);
    shutdown.cancel();
    running.await.expect("as the test set it up");
}

#[tokio::test]
async fn aggregated_pushes_add_up() {
    let source = source(RawConfig {
        push_aggregate_job: Some(vec!["lambda".to_owned()]),
        ..RawConfig::default()
    });
    for _ in 0..3 {
        let body = "# TYPE invocations_total counter\ninvocations_total 1\n";
        let (status, _) = send(&source, "POST", "/metrics/job/lambda", &[], body).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = send(
            &source,
            "PUT",
            "/metrics/job/other",
            &[(api::AGGREGATE_HEADER, "sum")],
            body,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(
        served(&source).await,
        [
            "invocations_total{instance=,job=lambda} 3",
            "invocations_total{instance=,job=other} 3"
        ]
    );
}

#[tokio::test]
async fn acknowledged_pushes_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!("tether-push-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let raw = || RawConfig {
        data_dir: Some(dir.clone()),
        ..RawConfig::default()
    };
    {
        let first = source(raw());
        for i in 0..20 {
            let (status, _) = send(
                &first,
                "PUT",
                &format!("/metrics/job/j/instance/{i}"),
                &[],
                format!("v {i}\n"),
            )
            .await;
            assert_eq!(status, StatusCode::OK);
        }
        send(&first, "DELETE", "/metrics/job/j/instance/3", &[], "").await;
        first.committer.close().await;
    }
    let second = source(raw());
    let lines = served(&second).await;
    assert_eq!(lines.len(), 19);
    assert!(
        lines.contains(&"v{instance=7,job=j} 7".to_owned()),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.contains("instance=3,")));
    second.committer.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn requests_on_one_group_take_turns_in_the_order_they_came() {
    let turns = GroupTurns::default();
    let a = key::GroupingKey::from_path("job/a").expect("a key");
    let b = key::GroupingKey::from_path("job/b").expect("a key");
    let first = turns.take(&a).await;
    // Another group is not held up.
    let other = turns.take(&b).await;
    drop(other);
    let mut second = Box::pin(turns.take(&a));
    assert!(
        futures::poll!(second.as_mut()).is_pending(),
        "the second request on a group waits for the first"
    );
    drop(first);
    let second = second.await;
    drop(second);
    assert!(turns.waiting.lock().is_empty(), "no turn is left behind");
}

#[tokio::test(start_paused = true)]
async fn a_body_that_never_comes_gets_408_and_a_push_without_room_503() {
    let source = source(RawConfig {
        push_body_timeout_ms: Some(1_000),
        push_max_body_bytes: Some(1 << 20),
        push_max_bytes_in_flight: Some(1 << 20),
        ..RawConfig::default()
    });
    // A body announced whole and never sent holds all the room.
    let never = Body::from_stream(futures::stream::pending::<
        Result<bytes::Bytes, std::io::Error>,
    >());
    let slow = {
        let source = Arc::clone(&source);
        tokio::spawn(async move {
            send(
                &source,
                "PUT",
                "/metrics/job/slow",
                &[("content-length", "1048576")],
                never,
            )
            .await
        })
    };
    // Until the slow push holds the room (its wait for the body is next).
    while source.in_flight.available_permits() > 0 {
        assert!(
            !slow.is_finished(),
            "the slow push ended before it held the room"
        );
        tokio::task::yield_now().await;
    }
    let (status, text) = send(
        &source,
        "PUT",
        "/metrics/job/other",
        &[("content-length", "4")],
        "x 1\n",
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert!(text.contains("--push-max-bytes-in-flight"), "{text}");
    let (status, text) = slow.await.expect("the slow push answered");
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{text}");
    // The room is back.
    let (status, _) = send(&source, "PUT", "/metrics/job/other", &[], "x 1\n").await;
    assert_eq!(status, StatusCode::OK);
}
