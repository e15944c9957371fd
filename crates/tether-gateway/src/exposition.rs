//! Expositions rendered once and shared: scrapes that arrive while a render
//! of the same scope and encoding is in flight join it and are written the
//! same body, and the bodies held at once are bounded.
//!
//! A body is one allocation behind `Bytes`, and it carries its permit of
//! [`Expositions`]' bound: the permit goes back when the last response
//! writing it is done or dropped (a client that does not read is dropped
//! at the write deadline). A scrape that would render a new body while
//! the bound is held waits for a permit until its deadline, then gets 503
//! with `Retry-After`, so that neither many scrapers nor one HTTP/2
//! connection with many streams can make the gateway hold more bodies.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared, WeakShared};
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::http::Negotiated;
use crate::sources::{Scope, ScrapeRequest};
use crate::state::Shared as GatewayState;
use crate::telemetry::Telemetry;
use crate::view::View;

/// Why no body could be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RenderError {
    /// The bound of bodies held did not free up before the deadline.
    Busy {
        /// The bound.
        max_bodies: usize,
    },
    /// Rendering or compressing failed.
    Failed(String),
}

/// A body, or why there is none.
pub(crate) type Rendered = Result<Bytes, RenderError>;

type SharedRender = Shared<BoxFuture<'static, Rendered>>;

/// What must match for two scrapes to share a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    scope: Scope,
    negotiated: Negotiated,
}

/// A render as the map holds it: weakly, so that a render every scrape of
/// which has gone is dropped (its permit with it) rather than kept, and a
/// finished body is held by its responses only.
struct InFlight {
    /// The deadline of the scrape that started it: a scrape with a later
    /// deadline may join, as the render ends in time for it.
    deadline: Instant,
    render: WeakShared<BoxFuture<'static, Rendered>>,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// Renders in flight and the bound on bodies held.
#[derive(Debug)]
pub(crate) struct Expositions {
    max_bodies: usize,
    permits: Arc<Semaphore>,
    /// Held only to clone or replace a shared future, never across an await.
    in_flight: Mutex<HashMap<Key, InFlight>>,
}

/// A body's bytes and its permit: they go together, when the last `Bytes`
/// of the body is dropped.
struct Body {
    bytes: Vec<u8>,
    permit: Option<OwnedSemaphorePermit>,
    permits: Arc<Semaphore>,
    max_bodies: usize,
    telemetry: Arc<Telemetry>,
}

impl AsRef<[u8]> for Body {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.telemetry
            .set_bodies_held(held(self.max_bodies, &self.permits));
    }
}

fn held(max_bodies: usize, permits: &Semaphore) -> usize {
    max_bodies.saturating_sub(permits.available_permits())
}

impl Expositions {
    /// At most `max_bodies` bodies held at once.
    pub(crate) fn new(max_bodies: usize) -> Expositions {
        Expositions {
            max_bodies,
            permits: Arc::new(Semaphore::new(max_bodies)),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// The body of the exposition `scope` as `negotiated`, ready by
    /// `deadline`: shared with a render in flight that ends in time, or
    /// rendered anew. Answers whether it was shared.
    pub(crate) async fn body(
        &self,
        state: &Arc<GatewayState>,
        scope: Scope,
        negotiated: Negotiated,
        deadline: Instant,
    ) -> (Rendered, bool) {
        let key = Key { scope, negotiated };
        let (render, shared) = {
            let mut in_flight = self.in_flight.lock();
            let joinable: Option<SharedRender> = in_flight
                .get(&key)
                .filter(|running| running.deadline <= deadline)
                .and_then(|running| running.render.upgrade())
                .filter(|render| render.peek().is_none());
            match joinable {
                Some(render) => (render, true),
                None => {
                    let render: SharedRender = self
                        .render(state, scope, negotiated, deadline)
                        .boxed()
                        .shared();
                    if let Some(weak) = render.downgrade() {
                        in_flight.insert(
                            key,
                            InFlight {
                                deadline,
                                render: weak,
                            },
                        );
                    }
                    (render, false)
                }
            }
        };
        (render.await, shared)
    }

    /// A render: a permit first (waiting until `deadline`), then every
    /// source asked, one view built and rendered on a blocking thread.
    fn render(
        &self,
        state: &Arc<GatewayState>,
        scope: Scope,
        negotiated: Negotiated,
        deadline: Instant,
    ) -> impl Future<Output = Rendered> + Send + 'static {
        let permits = Arc::clone(&self.permits);
        let max_bodies = self.max_bodies;
        let state = Arc::clone(state);
        let telemetry = Arc::clone(&state.telemetry);
        async move {
            let permit =
                match tokio::time::timeout_at(deadline, Arc::clone(&permits).acquire_owned()).await
                {
                    Ok(Ok(permit)) => permit,
                    // The semaphore is never closed; a timeout is the bound.
                    Ok(Err(_)) | Err(_) => return Err(RenderError::Busy { max_bodies }),
                };
            telemetry.set_bodies_held(held(max_bodies, &permits));
            let parts = state
                .sources
                .collect(ScrapeRequest { scope, deadline })
                .await;
            drop(state);
            let view_telemetry = Arc::clone(&telemetry);
            let rendered = tokio::task::spawn_blocking(move || {
                let view = View::build(parts);
                let mut body = Vec::with_capacity(64 * 1024);
                view.render(negotiated.format, &mut body);
                view_telemetry.record_view(&view.stats());
                if negotiated.gzip {
                    gzip(&body)
                } else {
                    Ok(body)
                }
            })
            .await;
            let bytes = match rendered {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(error)) => {
                    return Err(RenderError::Failed(format!(
                        "cannot compress the exposition: {error}"
                    )));
                }
                Err(_) => {
                    return Err(RenderError::Failed(
                        "rendering the exposition failed".to_owned(),
                    ));
                }
            };
            Ok(Bytes::from_owner(Body {
                bytes,
                permit: Some(permit),
                permits,
                max_bodies,
                telemetry,
            }))
        }
    }
}

/// Fast compression: a scrape is latency-bound, and level 1 already
/// shrinks expositions several times over.
fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    encoder.write_all(body)?;
    encoder.finish()
}
