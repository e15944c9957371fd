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
//! Each exposition path has a bound of its own, so that scrapers holding
//! `/metrics` never keep the gateway's own `/metrics/proxy` from its
//! monitoring.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared, WeakShared};
use parking_lot::Mutex;
use tether_model::Format;
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
    pools: Arc<Pools>,
    telemetry: Arc<Telemetry>,
    /// Held only to clone or replace a shared future, never across an await.
    in_flight: Mutex<HashMap<Key, InFlight>>,
    /// The size of the last uncompressed body of each scope and format, so
    /// the next render allocates its buffer once: grown by doubling, a
    /// 60 MB body would copy itself and briefly hold half as much again.
    size_hints: Arc<SizeHints>,
}

/// See [`Expositions::size_hints`].
#[derive(Debug, Default)]
struct SizeHints {
    /// By `Scope` (all, connected, gateway), then text / OpenMetrics.
    bytes: [[AtomicUsize; 2]; 3],
}

impl SizeHints {
    fn slot(&self, scope: Scope, format: Format) -> &AtomicUsize {
        let scope = match scope {
            Scope::All => 0,
            Scope::Connected => 1,
            Scope::Gateway => 2,
        };
        let format = usize::from(format == Format::OpenMetrics);
        &self.bytes[scope][format]
    }
}

/// The permits of bodies held, one bound per exposition path.
#[derive(Debug)]
struct Pools {
    max_bodies: usize,
    all: Arc<Semaphore>,
    connected: Arc<Semaphore>,
    gateway: Arc<Semaphore>,
}

impl Pools {
    fn of(&self, scope: Scope) -> &Arc<Semaphore> {
        match scope {
            Scope::All => &self.all,
            Scope::Connected => &self.connected,
            Scope::Gateway => &self.gateway,
        }
    }

    /// Bodies held now, on every path.
    fn held(&self) -> usize {
        [&self.all, &self.connected, &self.gateway]
            .iter()
            .map(|pool| self.max_bodies.saturating_sub(pool.available_permits()))
            .sum()
    }
}

/// A body's bytes and its permit: they go together, when the last `Bytes`
/// of the body is dropped.
struct Body {
    bytes: Vec<u8>,
    permit: Option<OwnedSemaphorePermit>,
    pools: Arc<Pools>,
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
        self.telemetry.set_bodies_held(self.pools.held());
    }
}

impl Expositions {
    /// At most `max_bodies` bodies held at once on each exposition path.
    pub(crate) fn new(max_bodies: usize, telemetry: Arc<Telemetry>) -> Expositions {
        let pool = || Arc::new(Semaphore::new(max_bodies));
        Expositions {
            pools: Arc::new(Pools {
                max_bodies,
                all: pool(),
                connected: pool(),
                gateway: pool(),
            }),
            telemetry,
            in_flight: Mutex::new(HashMap::new()),
            size_hints: Arc::default(),
        }
    }

    /// The body of the exposition `scope` as `negotiated`, ready by
    /// `deadline`: shared with a render in flight that ends in time, or
    /// rendered anew (every source asked, one view built and rendered on a
    /// blocking thread). Answers whether it was shared.
    pub(crate) async fn body(
        &self,
        state: &Arc<GatewayState>,
        scope: Scope,
        negotiated: Negotiated,
        deadline: Instant,
    ) -> (Rendered, bool) {
        let state = Arc::clone(state);
        let hints = Arc::clone(&self.size_hints);
        self.join_or_render(scope, negotiated, deadline, move || {
            render(state, hints, scope, negotiated, deadline)
        })
        .await
    }

    /// Joins the render in flight for `scope` and `negotiated` that ends by
    /// `deadline`, or starts `render` within the bound of bodies.
    async fn join_or_render<F, R>(
        &self,
        scope: Scope,
        negotiated: Negotiated,
        deadline: Instant,
        render: F,
    ) -> (Rendered, bool)
    where
        F: FnOnce() -> R,
        R: Future<Output = Result<Vec<u8>, RenderError>> + Send + 'static,
    {
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
                    let render: SharedRender =
                        self.bounded(scope, deadline, render()).boxed().shared();
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

    /// `render` once a permit of `scope`'s bound is free (waiting until
    /// `deadline`), its bytes holding the permit.
    fn bounded<R>(
        &self,
        scope: Scope,
        deadline: Instant,
        render: R,
    ) -> impl Future<Output = Rendered> + Send + 'static
    where
        R: Future<Output = Result<Vec<u8>, RenderError>> + Send + 'static,
    {
        let pools = Arc::clone(&self.pools);
        let telemetry = Arc::clone(&self.telemetry);
        async move {
            let pool = Arc::clone(pools.of(scope));
            let permit = match tokio::time::timeout_at(deadline, pool.acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                // The semaphore is never closed; a timeout is the bound.
                Ok(Err(_)) | Err(_) => {
                    return Err(RenderError::Busy {
                        max_bodies: pools.max_bodies,
                    });
                }
            };
            telemetry.set_bodies_held(pools.held());
            // The render runs as a task of its own that holds the permit to
            // its end: when every scrape waiting for it goes away, the work
            // already on a blocking thread cannot be stopped, and it still
            // counts against the bound until it is done.
            let task = tokio::spawn(async move {
                let rendered = render.await;
                (rendered, permit)
            });
            let Ok((rendered, permit)) = task.await else {
                return Err(RenderError::Failed(
                    "rendering the exposition failed".to_owned(),
                ));
            };
            // Dropped on an error, the permit goes back at once.
            let mut body = Body {
                bytes: Vec::new(),
                permit: Some(permit),
                pools,
                telemetry,
            };
            body.bytes = rendered?;
            Ok(Bytes::from_owner(body))
        }
    }
}

/// Every source asked for its parts by `deadline`, one view built and
/// rendered on a blocking thread, compressed if asked.
async fn render(
    state: Arc<GatewayState>,
    hints: Arc<SizeHints>,
    scope: Scope,
    negotiated: Negotiated,
    deadline: Instant,
) -> Result<Vec<u8>, RenderError> {
    let parts = state
        .sources
        .collect(ScrapeRequest { scope, deadline })
        .await;
    let telemetry = Arc::clone(&state.telemetry);
    drop(state);
    let rendered = tokio::task::spawn_blocking(move || {
        let view = View::build(parts);
        let hint = hints.slot(scope, negotiated.format);
        // The last size and a sixteenth more (a growing exposition still
        // fits, a shrinking one wastes little), or at the first render an
        // estimate from the view. Capacity never written is never touched,
        // so reserving more costs address space, not memory.
        let last = hint.load(Ordering::Relaxed);
        let reserve = if last > 0 {
            last + last / 16
        } else {
            view.estimated_bytes()
        };
        let mut body = Vec::with_capacity(reserve.max(64 * 1024));
        view.render(negotiated.format, &mut body);
        hint.store(body.len(), Ordering::Relaxed);
        telemetry.record_view(&view.stats());
        if negotiated.gzip {
            gzip(&body)
        } else {
            Ok(body)
        }
    })
    .await;
    match rendered {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(error)) => Err(RenderError::Failed(format!(
            "cannot compress the exposition: {error}"
        ))),
        Err(_) => Err(RenderError::Failed(
            "rendering the exposition failed".to_owned(),
        )),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tether_model::Format;
    use tokio::sync::oneshot;

    use super::*;

    fn expositions(max_bodies: usize) -> Expositions {
        Expositions::new(max_bodies, Arc::new(Telemetry::new(&metrics::NoopRecorder)))
    }

    const TEXT: Negotiated = Negotiated {
        format: Format::Text,
        gzip: false,
    };
    const GZIP: Negotiated = Negotiated {
        format: Format::Text,
        gzip: true,
    };

    #[tokio::test(start_paused = true)]
    async fn scrapes_arriving_during_a_render_share_its_body() {
        let expositions = expositions(8);
        let deadline = Instant::now() + Duration::from_secs(10);
        let (release, released) = oneshot::channel::<()>();
        let first = expositions.join_or_render(Scope::All, TEXT, deadline, || async move {
            let _ = released.await;
            Ok(b"body".to_vec())
        });
        let joined = |deadline| {
            expositions.join_or_render(Scope::All, TEXT, deadline, || async {
                panic!("a scrape that joins renders nothing")
            })
        };
        let later = deadline + Duration::from_secs(1);
        let (first, second, third, ()) =
            tokio::join!(first, joined(later), joined(deadline), async {
                let _ = release.send(());
            });
        let (first, shared_first) = (first.0.expect("a body"), first.1);
        let (second, shared_second) = (second.0.expect("a body"), second.1);
        let (third, shared_third) = (third.0.expect("a body"), third.1);
        assert!(!shared_first && shared_second && shared_third);
        assert_eq!(first.as_ptr(), second.as_ptr(), "one body, not copies");
        assert_eq!(first.as_ptr(), third.as_ptr());
        // Finished, it is not joined: the next scrape renders anew.
        let (next, shared) = expositions
            .join_or_render(Scope::All, TEXT, later, || async { Ok(b"next".to_vec()) })
            .await;
        assert!(!shared);
        assert_eq!(next.as_deref(), Ok(&b"next"[..]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_scrape_past_the_bound_waits_for_a_body_to_go_then_gives_up_at_its_deadline() {
        let expositions = expositions(1);
        let deadline = Instant::now() + Duration::from_secs(10);
        let (held, _) = expositions
            .join_or_render(Scope::All, TEXT, deadline, || async {
                Ok(b"held".to_vec())
            })
            .await;
        let held = held.expect("a body");
        // Another encoding does not join; the bound is full.
        let (refused, _) = expositions
            .join_or_render(Scope::All, GZIP, deadline, || async {
                Ok(b"gzip".to_vec())
            })
            .await;
        assert_eq!(refused, Err(RenderError::Busy { max_bodies: 1 }));
        // Another path has a bound of its own.
        let (proxy, _) = expositions
            .join_or_render(Scope::Gateway, TEXT, deadline, || async {
                Ok(b"own".to_vec())
            })
            .await;
        assert!(proxy.is_ok());
        // The held body goes while a scrape waits: the scrape goes on.
        let waiting = expositions.join_or_render(
            Scope::All,
            GZIP,
            Instant::now() + Duration::from_secs(10),
            || async { Ok(b"after".to_vec()) },
        );
        let (after, ()) = tokio::join!(waiting, async move {
            // `join!` polls the waiting scrape first.
            tokio::task::yield_now().await;
            drop(held);
        });
        assert_eq!(after.0.as_deref(), Ok(&b"after"[..]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_render_whose_scrapes_all_left_holds_its_permit_to_its_end() {
        let expositions = Arc::new(expositions(1));
        let deadline = Instant::now() + Duration::from_secs(10);
        let (release, released) = oneshot::channel::<()>();
        let (started, is_started) = oneshot::channel::<()>();
        let scrape = tokio::spawn({
            let expositions = Arc::clone(&expositions);
            async move {
                expositions
                    .join_or_render(Scope::All, TEXT, deadline, || async move {
                        let _ = started.send(());
                        let _ = released.await;
                        Ok(b"late".to_vec())
                    })
                    .await
            }
        });
        is_started.await.expect("the render started");
        // The scrape goes away; its render goes on, and keeps the bound.
        scrape.abort();
        let (refused, _) = expositions
            .join_or_render(Scope::All, GZIP, deadline, || async {
                Ok(b"gzip".to_vec())
            })
            .await;
        assert_eq!(refused, Err(RenderError::Busy { max_bodies: 1 }));
        let _ = release.send(());
        let (after, _) = expositions
            .join_or_render(
                Scope::All,
                GZIP,
                Instant::now() + Duration::from_secs(10),
                || async { Ok(b"after".to_vec()) },
            )
            .await;
        assert_eq!(after.as_deref(), Ok(&b"after"[..]));
    }

    #[tokio::test]
    async fn a_render_that_fails_gives_its_permit_back() {
        let expositions = expositions(1);
        let deadline = Instant::now() + Duration::from_secs(10);
        let failed = RenderError::Failed("broken".to_owned());
        let (rendered, _) = expositions
            .join_or_render(Scope::All, TEXT, deadline, || {
                let failed = failed.clone();
                async move { Err(failed) }
            })
            .await;
        assert_eq!(rendered, Err(failed));
        let (rendered, _) = expositions
            .join_or_render(Scope::All, TEXT, deadline, || async { Ok(b"ok".to_vec()) })
            .await;
        assert!(rendered.is_ok());
    }
}
