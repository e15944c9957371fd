//! The Pushgateway's routes: `PUT`/`POST`/`DELETE` on
//! `/metrics/job/<job>{/<label>/<value>}`, `GET /api/v1/metrics`,
//! `GET /api/v1/status` and `PUT /api/v1/admin/wipe`, with the
//! Pushgateway's status codes and JSON shapes.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde_json::{Map, Value as Json, json};
use tether_model::{MetricFamily, MetricType, Value};
use tokio::sync::OwnedSemaphorePermit;

use super::PushSource;
use super::body::{self, BodyFormat, Encoding, Prepared};
use super::key::{GroupingKey, KeyError};
use super::refusal::{Reason, Refusal};
use super::store::{Change, Group, Mode};

/// The header that sets a push's time to live, in seconds (0 = never).
pub(crate) const TTL_HEADER: &str = "x-tether-ttl-seconds";
/// The header that asks for aggregation (`sum`).
pub(crate) const AGGREGATE_HEADER: &str = "x-tether-aggregate";
/// Bodies larger than this are checked on the blocking pool.
const INLINE_CHECK_BYTES: usize = 64 << 10;

pub(crate) fn router(source: Arc<PushSource>) -> Router {
    Router::new()
        .route("/metrics/job/{*rest}", put(push).post(push).delete(push))
        .route(
            "/metrics/job@base64/{*rest}",
            put(push).post(push).delete(push),
        )
        .route("/api/v1/metrics", get(metrics_json))
        .route("/api/v1/status", get(status_json))
        .route("/api/v1/admin/wipe", put(wipe))
        .with_state(source)
}

fn refused(source: &PushSource, refusal: &Refusal) -> Response {
    source.telemetry.refused(refusal.reason);
    let mut response = (refusal.reason.status(), refusal.body()).into_response();
    let headers = response.headers_mut();
    match refusal.reason {
        Reason::Unauthorized => {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tether\", Bearer"),
            );
        }
        Reason::Throttled
        | Reason::Busy
        | Reason::StoreFailed
        | Reason::ShuttingDown
        | Reason::TooManyGroups
        | Reason::TooManySeries => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    response
}

async fn push(State(source): State<Arc<PushSource>>, request: Request) -> Response {
    if let Err(denied) = source.auth.check_request(&request).await {
        return refused(&source, &Refusal::denied(denied));
    }
    let path = request.uri().path();
    let rest = path.strip_prefix("/metrics/").unwrap_or(path);
    let key = match GroupingKey::from_path(rest) {
        Ok(key) => key,
        Err(KeyError::NotAPushPath) => {
            return (
                StatusCode::NOT_FOUND,
                format!("{}\n", KeyError::NotAPushPath),
            )
                .into_response();
        }
        Err(error) => {
            return refused(&source, &Refusal::new(Reason::BadPath, error.to_string()));
        }
    };
    let method = request.method().clone();
    // Requests on one group apply in the order they arrived: each waits
    // for the group's turn before its body is read.
    let _turn = source.turns.take(&key).await;
    if method == Method::DELETE {
        return match source
            .committer
            .submit(Change::Delete { key }, source.clock.now_ms())
            .await
        {
            Ok(()) => {
                source.telemetry.accepted();
                StatusCode::ACCEPTED.into_response()
            }
            Err(refusal) => refused(&source, &refusal),
        };
    }
    let mode = if method == Method::PUT {
        Mode::Replace
    } else {
        Mode::Names
    };
    match accept(&source, key, mode, request).await {
        Ok(()) => {
            source.telemetry.accepted();
            StatusCode::OK.into_response()
        }
        Err(refusal) => refused(&source, &refusal),
    }
}

/// Reads, checks and commits one push.
async fn accept(
    source: &Arc<PushSource>,
    key: GroupingKey,
    mode: Mode,
    request: Request,
) -> Result<(), Refusal> {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let settings = &source.settings;
    let encoding = Encoding::from_header(header_str(headers, header::CONTENT_ENCODING.as_str()))?;
    let format = BodyFormat::from_header(header_str(headers, header::CONTENT_TYPE.as_str()));
    let expires_at_ms = expiry(source, headers)?;
    let aggregate = aggregation(headers)? || settings.aggregate_jobs.iter().any(|j| j == key.job());
    let declared = header_str(headers, header::CONTENT_LENGTH.as_str())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > settings.max_body_bytes as u64) {
        return Err(body_too_large(settings.max_body_bytes));
    }
    // Room for the body before a byte of it is read: what a declared
    // length says, or the most a body may be.
    let room = declared.map_or(settings.max_body_bytes, |n| n as usize);
    let room_permit = tokio::time::timeout(
        settings.body_timeout,
        Arc::clone(&source.in_flight)
            .acquire_many_owned(u32::try_from(super::kib(room.max(1))).unwrap_or(u32::MAX)),
    )
    .await
    .map_err(|_| busy())?
    .map_err(|_| shutting_down())?;
    let raw = tokio::time::timeout(
        settings.body_timeout,
        axum::body::to_bytes(Body::new(body), settings.max_body_bytes),
    )
    .await
    .map_err(|_| {
        Refusal::new(
            Reason::BodyTimeout,
            format!(
                "the body did not arrive within {} ms: send it faster, or raise --push-body-timeout-ms",
                settings.body_timeout.as_millis()
            ),
        )
    })?
    .map_err(|e| {
        if crate::http::is_length_limit(&e) {
            body_too_large(settings.max_body_bytes)
        } else {
            Refusal::new(Reason::Malformed, format!("the body could not be read: {e}"))
        }
    })?;
    let (checked, _permits) = {
        let check_permit = Arc::clone(&source.checks)
            .acquire_owned()
            .await
            .map_err(|_| shutting_down())?;
        let limits = source.settings.body;
        let key = key.clone();
        let in_flight = Arc::clone(&source.in_flight);
        // The permits go with the work: if the request goes away while the
        // body is checked on the blocking pool, what the work holds stays
        // counted until the work ends.
        let check = move || -> (Result<Prepared, Refusal>, Vec<OwnedSemaphorePermit>) {
            let mut permits = vec![room_permit];
            let result = (|| {
                let decompressed = body::decompress(raw, encoding, limits.max_decompressed_bytes)?;
                // The body decompressed counts against the same budget.
                let extra = super::kib(decompressed.len()).saturating_sub(super::kib(room));
                if extra > 0 {
                    let permit = u32::try_from(extra)
                        .ok()
                        .and_then(|n| Arc::clone(&in_flight).try_acquire_many_owned(n).ok())
                        .ok_or_else(busy)?;
                    permits.push(permit);
                }
                let families = body::parse(&decompressed, format, &limits)?;
                drop(decompressed);
                body::prepare(families, &key, &limits)
            })();
            drop(check_permit);
            (result, permits)
        };
        if room <= INLINE_CHECK_BYTES && encoding == Encoding::Identity {
            check()
        } else {
            tokio::task::spawn_blocking(check)
                .await
                .map_err(|_| shutting_down())?
        }
    };
    let now_ms = source.clock.now_ms();
    match checked {
        Ok(prepared) => {
            source
                .committer
                .submit(
                    Change::Push {
                        key,
                        prepared,
                        mode,
                        aggregate,
                        expires_at_ms,
                    },
                    now_ms,
                )
                .await
        }
        Err(refusal) => {
            if refusal.reason.marks_failure() {
                // Recorded as the Pushgateway records it: the group's
                // failure time, created if need be.
                source
                    .committer
                    .submit(Change::Fail { key, expires_at_ms }, now_ms)
                    .await?;
            }
            Err(refusal)
        }
    }
}

fn body_too_large(max: usize) -> Refusal {
    Refusal::new(
        Reason::BodyTooLarge,
        format!("the body is larger than {max} bytes: push less, or raise --push-max-body-bytes"),
    )
}

fn busy() -> Refusal {
    Refusal::new(
        Reason::Busy,
        "the gateway holds as many push bodies as --push-max-bytes-in-flight allows: retry"
            .to_owned(),
    )
}

fn shutting_down() -> Refusal {
    Refusal::new(
        Reason::ShuttingDown,
        "the gateway is shutting down: retry against it once it is back".to_owned(),
    )
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The push's expiry in Unix ms (0 = never), from its header or the
/// default TTL.
fn expiry(source: &PushSource, headers: &HeaderMap) -> Result<u64, Refusal> {
    let ttl = match header_str(headers, TTL_HEADER) {
        Some(value) => {
            let seconds: u64 = value.trim().parse().map_err(|_| {
                Refusal::new(
                    Reason::Malformed,
                    format!("X-Tether-TTL-Seconds takes whole seconds (0 = never), not {value:?}"),
                )
            })?;
            (seconds > 0).then(|| std::time::Duration::from_secs(seconds))
        }
        None => source.settings.ttl,
    };
    Ok(ttl.map_or(0, |ttl| {
        source
            .clock
            .now_ms()
            .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
    }))
}

fn aggregation(headers: &HeaderMap) -> Result<bool, Refusal> {
    match header_str(headers, AGGREGATE_HEADER).map(str::trim) {
        None => Ok(false),
        Some(value) if value.eq_ignore_ascii_case("sum") => Ok(true),
        Some(value) => Err(Refusal::new(
            Reason::Malformed,
            format!("X-Tether-Aggregate takes sum, not {value:?}"),
        )),
    }
}

async fn wipe(State(source): State<Arc<PushSource>>, request: Request) -> Response {
    if !source.settings.admin_api {
        source.telemetry.refused(Reason::AdminDisabled);
        return (
            StatusCode::NOT_FOUND,
            "the admin API is off: start the gateway with --enable-admin-api\n",
        )
            .into_response();
    }
    if let Err(denied) = source.auth.check_request(&request).await {
        return refused(&source, &Refusal::denied(denied));
    }
    match source
        .committer
        .submit(Change::Wipe, source.clock.now_ms())
        .await
    {
        Ok(()) => {
            source.telemetry.accepted();
            StatusCode::ACCEPTED.into_response()
        }
        Err(refusal) => refused(&source, &refusal),
    }
}

fn json_response(value: &Json) -> Response {
    let mut response = value.to_string().into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    response
}

async fn metrics_json(State(source): State<Arc<PushSource>>) -> Response {
    let groups: Vec<Json> = source.groups().iter().map(|g| group_json(g)).collect();
    json_response(&json!({"status": "success", "data": groups}))
}

async fn status_json(State(source): State<Arc<PushSource>>) -> Response {
    let flags: Map<String, Json> = source
        .flags
        .iter()
        .map(|(name, value)| (name.clone(), Json::String(value.clone())))
        .collect();
    json_response(&json!({
        "status": "success",
        "data": {
            "build_information": {
                "version": env!("CARGO_PKG_VERSION"),
                "program": "tether",
            },
            "flags": flags,
            "start_time": rfc3339(source.started.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())),
        }
    }))
}

/// One group in the Pushgateway's JSON shape.
fn group_json(group: &Group) -> Json {
    let mut object = Map::new();
    let labels: Map<String, Json> = group
        .key
        .labels()
        .iter()
        .map(|l| (l.name.clone(), Json::String(l.value.clone())))
        .collect();
    object.insert("labels".to_owned(), Json::Object(labels));
    object.insert(
        "last_push_successful".to_owned(),
        Json::Bool(group.last_push_successful()),
    );
    for family in group.body.as_slice() {
        object.insert(
            family.name.clone(),
            family_json(group, family, group.family_time(&family.name)),
        );
    }
    for family in group.times.as_slice() {
        object.insert(
            family.name.clone(),
            family_json(group, family, group.push_time.max(group.failure_time)),
        );
    }
    Json::Object(object)
}

fn family_json(group: &Group, family: &MetricFamily, time: f64) -> Json {
    let mut object = Map::new();
    object.insert("time_stamp".to_owned(), Json::String(rfc3339(time)));
    let kind = match family.metric_type {
        MetricType::Counter => "COUNTER",
        MetricType::Gauge | MetricType::Info | MetricType::StateSet => "GAUGE",
        MetricType::Histogram | MetricType::GaugeHistogram => "HISTOGRAM",
        MetricType::Summary => "SUMMARY",
        MetricType::Unknown => "UNTYPED",
    };
    object.insert("type".to_owned(), Json::String(kind.to_owned()));
    if let Some(help) = family.help.as_ref().filter(|h| !h.is_empty()) {
        object.insert("help".to_owned(), Json::String(help.clone()));
    }
    let metrics: Vec<Json> = family
        .series
        .iter()
        .map(|series| {
            let mut labels: Map<String, Json> = group
                .target
                .labels()
                .iter()
                .map(|l| (l.name.clone(), Json::String(l.value.clone())))
                .collect();
            for label in &series.labels {
                labels.insert(label.name.clone(), Json::String(label.value.clone()));
            }
            let mut metric = Map::new();
            metric.insert("labels".to_owned(), Json::Object(labels));
            match &series.value {
                Value::Single(v) => {
                    metric.insert("value".to_owned(), number(*v));
                }
                Value::Counter(c) => {
                    metric.insert("value".to_owned(), number(c.total));
                }
                Value::Histogram(h) => {
                    let buckets: Map<String, Json> = h
                        .buckets
                        .iter()
                        .map(|b| (go_float(b.upper_bound), number(b.count)))
                        .collect();
                    metric.insert("buckets".to_owned(), Json::Object(buckets));
                    metric.insert("count".to_owned(), number(h.count.unwrap_or(0.0)));
                    metric.insert("sum".to_owned(), number(h.sum.unwrap_or(0.0)));
                }
                Value::Summary(s) => {
                    let quantiles: Map<String, Json> = s
                        .quantiles
                        .iter()
                        .map(|q| (go_float(q.quantile), number(q.value)))
                        .collect();
                    metric.insert("quantiles".to_owned(), Json::Object(quantiles));
                    metric.insert("count".to_owned(), number(s.count.unwrap_or(0.0)));
                    metric.insert("sum".to_owned(), number(s.sum.unwrap_or(0.0)));
                }
            }
            Json::Object(metric)
        })
        .collect();
    object.insert("metrics".to_owned(), Json::Array(metrics));
    Json::Object(object)
}

fn number(value: f64) -> Json {
    Json::String(go_float(value))
}

/// A float as Go's `strconv.FormatFloat(v, 'g', -1, 64)` writes it, which
/// the Pushgateway's JSON uses: shortest digits, with an exponent when it
/// is below -4 or 6 and above.
fn go_float(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    if value == 0.0 {
        return "0".to_owned();
    }
    let scientific = format!("{value:e}");
    let Some((mantissa, exponent)) = scientific.split_once('e') else {
        return scientific;
    };
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if (-4..6).contains(&exponent) {
        return format!("{value}");
    }
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.unsigned_abs())
}

/// Unix seconds as RFC 3339 in UTC with nanoseconds, as Go writes them.
fn rfc3339(unix_seconds: f64) -> String {
    // Microseconds at most: the times are kept in milliseconds, and more
    // digits would only show the float's rounding.
    let total_nanos = ((unix_seconds.clamp(0.0, 1e11) * 1e6).round() as u128).saturating_mul(1000);
    let seconds = (total_nanos / 1_000_000_000) as i64;
    let nanos = (total_nanos % 1_000_000_000) as u32;
    let days = seconds.div_euclid(86_400);
    let day_seconds = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let mut text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        day_seconds / 3600,
        (day_seconds / 60) % 60,
        day_seconds % 60
    );
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('Z');
    text
}

/// Days since 1970-01-01 to a (year, month, day) of the proleptic
/// Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_and_times_are_written_as_go_writes_them() {
        for (value, text) in [
            (1.0, "1"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (123_456.0, "123456"),
            (1_000_000.0, "1e+06"),
            (12_345_678_901.0, "1.2345678901e+10"),
            (1.796_190_497_103_161_6e9, "1.7961904971031616e+09"),
            (1e300, "1e+300"),
            (0.0001, "0.0001"),
            (0.000_01, "1e-05"),
            (-0.0, "0"),
            (f64::INFINITY, "+Inf"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(go_float(value), text, "{value}");
        }
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_190_497.5), "2026-12-02T05:48:17.5Z");
        assert_eq!(rfc3339(951_782_400.0), "2000-02-29T00:00:00Z");
    }
}
