//! The HTTP routes: Prometheus expositions, health and readiness.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tether_model::Format;

use crate::credentials::Denied;
use crate::exposition::RenderError;
use crate::sources::Scope;
use crate::state::Shared;

/// Prometheus' header with the scrape's timeout in seconds.
pub(crate) const SCRAPE_TIMEOUT_HEADER: &str = "x-prometheus-scrape-timeout-seconds";

/// Builds the router over the gateway's shared state.
pub(crate) fn router(shared: &Arc<Shared>) -> Router {
    let mut router = Router::new()
        .route("/metrics", get(metrics_all))
        .route("/metrics/connected", get(metrics_connected))
        .route("/metrics/proxy", get(metrics_proxy))
        .route("/-/healthy", get(|| async { "OK\n" }))
        .route("/-/ready", get(ready))
        .route("/api/v1/sources", get(sources_status))
        .with_state(Arc::clone(shared));
    for source in shared.sources.iter() {
        if let Some(routes) = Arc::clone(source).routes() {
            router = router.merge(routes);
        }
    }
    router
}

async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    if shared.ready() {
        (StatusCode::OK, "OK\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting or shutting down\n",
        )
            .into_response()
    }
}

/// Every source's status as JSON: `[{"kind", "items": [{"id", "state",
/// "details": {..}}]}]`, what the status page shows.
async fn sources_status(State(shared): State<Arc<Shared>>) -> Response {
    let status: Vec<serde_json::Value> = shared
        .sources
        .status()
        .into_iter()
        .map(|source| {
            let items: Vec<serde_json::Value> = source
                .items
                .into_iter()
                .map(|item| {
                    let details: serde_json::Map<String, serde_json::Value> = item
                        .details
                        .into_iter()
                        .map(|(name, value)| (name.to_owned(), serde_json::Value::String(value)))
                        .collect();
                    serde_json::json!({"id": item.id, "state": item.state, "details": details})
                })
                .collect();
            serde_json::json!({"kind": source.kind, "items": items})
        })
        .collect();
    let mut response = serde_json::Value::Array(status).to_string().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn metrics_all(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    guarded_exposition(shared, request, Scope::All).await
}

async fn metrics_connected(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    guarded_exposition(shared, request, Scope::Connected).await
}

async fn metrics_proxy(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    guarded_exposition(shared, request, Scope::Gateway).await
}

/// An exposition, once the request has shown the expositions'
/// credentials (when `metrics_password` is set).
async fn guarded_exposition(shared: Arc<Shared>, request: Request, scope: Scope) -> Response {
    if let Err(denied) = shared.metrics_guard.check_request(&request).await {
        let (status, challenge) = match denied {
            Denied::Unauthorized => (StatusCode::UNAUTHORIZED, true),
            Denied::Throttled | Denied::Busy => (StatusCode::TOO_MANY_REQUESTS, false),
        };
        let mut response = (status, format!("{}\n", denied.message())).into_response();
        let header_value = if challenge {
            (header::WWW_AUTHENTICATE, "Basic realm=\"metrics\"")
        } else {
            (header::RETRY_AFTER, "1")
        };
        response
            .headers_mut()
            .insert(header_value.0, HeaderValue::from_static(header_value.1));
        return response;
    }
    exposition(shared, request.headers(), scope).await
}

/// One exposition: every source asked for its parts within the scrape's
/// deadline, one view built from them, rendered as the scraper asked; or
/// the body of a render of the same round in flight (see
/// [`crate::exposition`]).
async fn exposition(shared: Arc<Shared>, headers: &HeaderMap, scope: Scope) -> Response {
    let negotiated = Negotiated::from_headers(headers);
    let timeout = scrape_timeout(
        headers,
        shared.config.http.scrape_timeout,
        shared.config.http.scrape_margin,
    );
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let (rendered, joined) = shared
        .expositions
        .body(&shared, scope, negotiated, deadline)
        .await;
    if joined {
        shared.telemetry.scrape_shared();
    }
    let response = match rendered {
        Ok(body) => {
            let mut response = Response::new(axum::body::Body::from(body));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(negotiated.format.content_type()),
            );
            if negotiated.gzip {
                headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            response
        }
        Err(RenderError::Busy { max_bodies }) => {
            shared.telemetry.scrape_refused();
            let mut response = (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{max_bodies} expositions are held for slower scrapes: retry, or raise --max-scrape-bodies\n"
                ),
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        Err(RenderError::Failed(message)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{message}\n")).into_response()
        }
    };
    shared.telemetry.record_scrape(started.elapsed());
    response
}

/// Whether a body read failed because the body passed its length limit.
pub(crate) fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// The format and encoding a scraper asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Negotiated {
    pub(crate) format: Format,
    pub(crate) gzip: bool,
}

impl Negotiated {
    /// Reads `Accept` and `Accept-Encoding` as Prometheus sends them.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Negotiated {
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let encoding = headers
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let openmetrics = quality(accept, |media| {
            media.starts_with("application/openmetrics-text")
        });
        let text = quality(accept, |media| {
            media.starts_with("text/plain") || media == "*/*"
        });
        Negotiated {
            format: if openmetrics > 0.0 && openmetrics >= text {
                Format::OpenMetrics
            } else {
                Format::Text
            },
            gzip: quality(encoding, |coding| coding == "gzip" || coding == "*") > 0.0,
        }
    }
}

/// The highest `q` of the entries of an `Accept`-style list that `matches`.
fn quality(list: &str, matches: impl Fn(&str) -> bool) -> f32 {
    list.split(',')
        .filter_map(|entry| {
            let mut parts = entry.split(';').map(str::trim);
            let media = parts.next()?.to_ascii_lowercase();
            if !matches(&media) {
                return None;
            }
            let q = parts
                .find_map(|p| p.strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            Some(q)
        })
        .fold(0.0, f32::max)
}

/// The time a scrape may spend on its fan-out: the scraper's timeout less
/// `margin`, capped by `cap`.
pub(crate) fn scrape_timeout(headers: &HeaderMap, cap: Duration, margin: Duration) -> Duration {
    let Some(seconds) = headers
        .get(SCRAPE_TIMEOUT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
    else {
        return cap;
    };
    let scraper = Duration::from_secs_f64(seconds.min(1e6));
    // Keep the margin back, but never more than half the scraper's time.
    let usable = if scraper > margin * 2 {
        scraper - margin
    } else {
        scraper / 2
    };
    usable.min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for &(name, value) in pairs {
            map.insert(name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn negotiates_as_prometheus_asks() {
        let prometheus = headers(&[
            (
                "accept",
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            ),
            ("accept-encoding", "gzip"),
        ]);
        assert_eq!(
            Negotiated::from_headers(&prometheus),
            Negotiated {
                format: Format::OpenMetrics,
                gzip: true
            }
        );
        let text_preferred = headers(&[(
            "accept",
            "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.5",
        )]);
        assert_eq!(
            Negotiated::from_headers(&text_preferred).format,
            Format::Text
        );
        let curl = headers(&[("accept", "*/*")]);
        assert_eq!(
            Negotiated::from_headers(&curl),
            Negotiated {
                format: Format::Text,
                gzip: false
            }
        );
        assert!(!Negotiated::from_headers(&headers(&[("accept-encoding", "gzip;q=0")])).gzip);
    }

    #[test]
    fn scrape_timeout_follows_the_scraper_within_the_cap() {
        let cap = Duration::from_secs(10);
        let margin = Duration::from_millis(250);
        assert_eq!(scrape_timeout(&HeaderMap::new(), cap, margin), cap);
        assert_eq!(
            scrape_timeout(&headers(&[(SCRAPE_TIMEOUT_HEADER, "2")]), cap, margin),
            Duration::from_millis(1750)
        );
        assert_eq!(
            scrape_timeout(&headers(&[(SCRAPE_TIMEOUT_HEADER, "30")]), cap, margin),
            cap
        );
        assert_eq!(
            scrape_timeout(&headers(&[(SCRAPE_TIMEOUT_HEADER, "0.3")]), cap, margin),
            Duration::from_millis(150)
        );
        assert_eq!(
            scrape_timeout(&headers(&[(SCRAPE_TIMEOUT_HEADER, "nope")]), cap, margin),
            cap
        );
        assert_eq!(
            scrape_timeout(&headers(&[(SCRAPE_TIMEOUT_HEADER, "-1")]), cap, margin),
            cap
        );
    }
}
