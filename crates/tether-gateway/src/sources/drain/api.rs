//! A drain's route: `POST <path>` with a logplex batch.
//!
//! Answers: 200 for a batch read (bad lines in it are counted, never
//! refused) or one already applied (a retry), 401 without the drain's
//! credentials, 429 when the address has failed too often, 413 for a body
//! past the limit, 408 for a body too slow to arrive, 400 for a body that
//! could not be read.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::DrainSource;
use super::frame_ids::MAX_FRAME_ID_BYTES;
use super::lines::{Batch, read_batch};
use super::telemetry::Outcome;
use crate::credentials::Denied;

/// The header with the batch's id, kept by logplex when it retries.
pub(crate) const FRAME_ID_HEADER: &str = "logplex-frame-id";
/// The header with the number of messages in the batch.
pub(crate) const MSG_COUNT_HEADER: &str = "logplex-msg-count";

pub(crate) fn router(source: Arc<DrainSource>) -> Router {
    let path = source.config.path.clone();
    Router::new().route(&path, post(drain)).with_state(source)
}

fn answer(source: &DrainSource, outcome: Outcome, status: StatusCode, message: &str) -> Response {
    source.telemetry.request(outcome);
    let mut response = if message.is_empty() {
        status.into_response()
    } else {
        (status, format!("{message}\n")).into_response()
    };
    let headers = response.headers_mut();
    match outcome {
        Outcome::Unauthorized => {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"drain\""),
            );
        }
        Outcome::Throttled => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    response
}

async fn drain(State(source): State<Arc<DrainSource>>, request: Request) -> Response {
    if let Err(denied) = source.guard.check_request(&request).await {
        let (outcome, status) = match denied {
            Denied::Unauthorized => (Outcome::Unauthorized, StatusCode::UNAUTHORIZED),
            Denied::Throttled | Denied::Busy => (Outcome::Throttled, StatusCode::TOO_MANY_REQUESTS),
        };
        return answer(&source, outcome, status, denied.message());
    }
    let (parts, body) = request.into_parts();
    let frame_id = frame_id(&parts.headers);
    if let Some(id) = &frame_id
        && source.state.lock().ids.contains(id, source.now_ms())
    {
        return answer(&source, Outcome::Duplicate, StatusCode::OK, "");
    }
    let config = &source.config;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let too_large = || {
        format!(
            "the batch is larger than {} bytes: raise --drain-max-body-bytes",
            config.max_body_bytes
        )
    };
    if declared.is_some_and(|n| n > config.max_body_bytes as u64) {
        return answer(
            &source,
            Outcome::TooLarge,
            StatusCode::PAYLOAD_TOO_LARGE,
            &too_large(),
        );
    }
    let body = match tokio::time::timeout(
        config.body_timeout,
        axum::body::to_bytes(Body::new(body), config.max_body_bytes),
    )
    .await
    {
        Ok(Ok(body)) => body,
        Ok(Err(error)) if crate::http::is_length_limit(&error) => {
            return answer(
                &source,
                Outcome::TooLarge,
                StatusCode::PAYLOAD_TOO_LARGE,
                &too_large(),
            );
        }
        Ok(Err(error)) => {
            return answer(
                &source,
                Outcome::BadRequest,
                StatusCode::BAD_REQUEST,
                &format!("the batch could not be read: {error}"),
            );
        }
        Err(_) => {
            return answer(
                &source,
                Outcome::Timeout,
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the batch did not arrive within {} ms: raise --drain-body-timeout-ms",
                    config.body_timeout.as_millis()
                ),
            );
        }
    };
    let started = Instant::now();
    let batch = if body.len() > super::INLINE_BATCH_BYTES {
        let prefix = config.prefix.clone();
        let limits = config.limits;
        match tokio::task::spawn_blocking(move || read_batch(&body, &prefix, &limits)).await {
            Ok(batch) => batch,
            Err(_) => {
                return answer(
                    &source,
                    Outcome::BadRequest,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the batch could not be read",
                );
            }
        }
    } else {
        read_batch(&body, &config.prefix, &config.limits)
    };
    let msg_count = parts
        .headers
        .get(MSG_COUNT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if apply(&source, batch, frame_id.as_deref(), msg_count, started) {
        answer(&source, Outcome::Accepted, StatusCode::OK, "")
    } else {
        answer(&source, Outcome::Duplicate, StatusCode::OK, "")
    }
}

/// The batch's id, if it has one that can be remembered.
fn frame_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get(FRAME_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|id| !id.is_empty() && id.len() <= MAX_FRAME_ID_BYTES)
        .map(str::to_owned)
}

/// Applies a batch read from a body, unless its id was applied meanwhile;
/// false for a duplicate.
fn apply(
    source: &DrainSource,
    mut batch: Batch,
    frame_id: Option<&str>,
    msg_count: Option<u64>,
    started: Instant,
) -> bool {
    let now = source.now_ms();
    let (held, log) = {
        let mut state = source.state.lock();
        if let Some(id) = frame_id
            && !state.ids.insert(id, now)
        {
            return false;
        }
        for update in std::mem::take(&mut batch.updates) {
            if let Err(refused) =
                state
                    .store
                    .apply(&update.name, update.help, &update.labels, update.op, now)
            {
                let name = &update.name;
                batch.reject(refused.reason(), || {
                    format!("{name}: {}", describe(refused, &source.config))
                });
            }
        }
        state.batches += 1;
        state.last_batch_ms = Some(now);
        let log = if batch.rejected.is_empty() {
            None
        } else {
            let due = state
                .last_log
                .is_none_or(|at| at.elapsed() >= super::REJECT_LOG_INTERVAL);
            let n: u64 = batch.rejected.iter().map(|(_, n)| n).sum();
            if due {
                state.last_log = Some(tokio::time::Instant::now());
                Some(std::mem::take(&mut state.unlogged) + n)
            } else {
                state.unlogged += n;
                None
            }
        };
        (state.store.n_series(), log)
    };
    if let Some(n) = log {
        tracing::warn!(
            drain = %source.config.path,
            rejected = n,
            first = batch.first_error.as_deref().unwrap_or(""),
            "drain lines refused (counted in tether_drain_rejected_lines_total)"
        );
    }
    if msg_count.is_some_and(|n| n != batch.frames) {
        source.telemetry.mismatch();
    }
    source.telemetry.held(held);
    source
        .telemetry
        .batch(&batch, started.elapsed().as_secs_f64());
    true
}

fn describe(refused: super::store::Refused, config: &super::DrainConfig) -> String {
    use super::store::Refused;
    match refused {
        Refused::SeriesLimit => format!(
            "the drain holds {} series already: raise --drain-max-series, or send fewer label values",
            config.store.max_series
        ),
        Refused::BytesLimit => format!(
            "the drain holds {} bytes of series already: raise --drain-max-held-bytes",
            config.store.max_bytes
        ),
        Refused::TypeConflict => "the name is held with another type".to_owned(),
        Refused::BadValue => "a counter must be finite and not negative".to_owned(),
    }
}
