//! Scrape fan-out: every connected agent asked at once, answers collected
//! until the deadline, and concurrent scrapes sharing one round.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared, join_all};
use parking_lot::Mutex;
use tether_model::{MetricFamily, MetricType, Series, Value};

use super::registry::{AgentHandle, Answer, Registry, ScrapeFailure};

/// The outcome of asking one agent.
#[derive(Debug, Clone)]
pub(crate) struct AgentResult {
    /// The agent asked.
    pub(crate) agent: AgentHandle,
    /// Its families, or why there are none.
    pub(crate) outcome: Result<Answer, ScrapeFailure>,
    /// How long it took to answer (or to fail).
    pub(crate) duration: Duration,
}

/// One fan-out to every agent connected when it started.
#[derive(Debug)]
pub(crate) struct Round {
    /// The results, in identity order.
    pub(crate) results: Vec<AgentResult>,
    /// The registry's stamp when the round began.
    pub(crate) started_seq: u64,
}

impl Round {
    /// `tether_agent_up{job,instance,...}`: 1 for each agent that answered
    /// this round, 0 for each that did not.
    pub(crate) fn up_family(&self) -> MetricFamily {
        let mut family = MetricFamily::new("tether_agent_up", MetricType::Gauge);
        family.help =
            Some("Whether the agent answered the gateway's last scrape (1) or not (0).".to_owned());
        family.series = self
            .results
            .iter()
            .map(|result| Series {
                labels: result.agent.target.labels().to_vec(),
                value: Value::Single(if result.outcome.is_ok() { 1.0 } else { 0.0 }),
                timestamp_ms: None,
            })
            .collect();
        family
    }

    /// `tether_agent_scrape_duration_seconds{job,instance,...}`.
    pub(crate) fn duration_family(&self) -> MetricFamily {
        let mut family =
            MetricFamily::new("tether_agent_scrape_duration_seconds", MetricType::Gauge);
        family.help = Some(
            "How long the agent took to answer the gateway's last scrape, or to fail.".to_owned(),
        );
        family.unit = Some("seconds".to_owned());
        family.series = self
            .results
            .iter()
            .map(|result| Series {
                labels: result.agent.target.labels().to_vec(),
                value: Value::Single(result.duration.as_secs_f64()),
                timestamp_ms: None,
            })
            .collect();
        family
    }
}

type SharedRound = Shared<BoxFuture<'static, Arc<Round>>>;

struct InFlight {
    deadline: Instant,
    round: SharedRound,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("deadline", &self.deadline)
            .field("finished", &self.round.peek().is_some())
            .finish()
    }
}

/// Starts rounds and lets scrapes that arrive while one runs join it.
#[derive(Debug)]
pub(crate) struct Scraper {
    registry: Arc<Registry>,
    /// The latest round. A plain mutex: it is held only to clone or replace
    /// the shared future, never across an await.
    in_flight: Mutex<Option<InFlight>>,
}

impl Scraper {
    /// A scraper over the agents of `registry`.
    pub(crate) fn new(registry: Arc<Registry>) -> Scraper {
        Scraper {
            registry,
            in_flight: Mutex::new(None),
        }
    }

    /// The results of a round that ends no later than `timeout` from now:
    /// the running round if it does, a new one otherwise.
    pub(crate) async fn scrape(&self, timeout: Duration) -> Arc<Round> {
        let deadline = Instant::now() + timeout;
        let round = {
            let mut slot = self.in_flight.lock();
            match slot.as_ref() {
                // Join a round still running that ends in time for us.
                Some(running) if running.round.peek().is_none() && running.deadline <= deadline => {
                    running.round.clone()
                }
                _ => {
                    let round =
                        start_round(self.registry.agents(), self.registry.stamp(), deadline);
                    *slot = Some(InFlight {
                        deadline,
                        round: round.clone(),
                    });
                    round
                }
            }
        };
        let round = round.await;
        // A finished round is not joined again; dropping it from the slot
        // frees every agent's families as soon as the scrapes using them
        // are done, instead of holding them until the next scrape.
        let mut slot = self.in_flight.lock();
        if slot
            .as_ref()
            .is_some_and(|running| running.round.peek().is_some())
        {
            *slot = None;
        }
        round
    }
}

/// Spawns the fan-out so that it completes even if the scrape that
/// started it goes away while others wait on it.
fn start_round(agents: Vec<AgentHandle>, started_seq: u64, deadline: Instant) -> SharedRound {
    let task = tokio::spawn(async move {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let results = join_all(agents.into_iter().map(|agent| async move {
            let started = Instant::now();
            let outcome = agent.scrape(timeout).await;
            AgentResult {
                agent,
                outcome,
                duration: started.elapsed(),
            }
        }))
        .await;
        Arc::new(Round {
            results,
            started_seq,
        })
    });
    async move {
        // The task only panics if an agent's scrape future does, which
        // would be a bug; an empty round keeps the scrape answering.
        task.await.unwrap_or_else(|_| {
            Arc::new(Round {
                results: Vec::new(),
                started_seq,
            })
        })
    }
    .boxed()
    .shared()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IdentityCollision;
    use crate::sources::agents::registry::{Command, Identity, Registered};
    use crate::view::Families;
    use tether_model::Label;
    use tokio_util::sync::CancellationToken;

    #[tokio::test]
    async fn scrapes_arriving_together_share_one_round() {
        let registry = Arc::new(Registry::default());
        let identity = Identity::new(vec![Label::new("job", "j"), Label::new("instance", "i")]);
        let Registered {
            guard: _guard,
            mut commands,
            ..
        } = registry
            .register(
                identity,
                10,
                CancellationToken::new(),
                IdentityCollision::KeepConnected,
            )
            .expect("room for one agent");
        let scraper = Scraper::new(Arc::clone(&registry));
        let agent = async {
            // Answer the first request only after both scrapes are waiting:
            // the second must have joined the first round, not started one.
            let Some(Command::Scrape { reply, .. }) = commands.recv().await else {
                panic!("the agent is asked once");
            };
            let _ = reply.send(Ok(Answer {
                families: Arc::new(Families::empty()),
                seq: 1,
            }));
        };
        let timeout = Duration::from_secs(30);
        let (first, second, ()) =
            tokio::join!(scraper.scrape(timeout), scraper.scrape(timeout), agent);
        assert!(
            Arc::ptr_eq(&first, &second),
            "both scrapes got the same round"
        );
        assert!(first.results[0].outcome.is_ok());
        assert!(commands.try_recv().is_err(), "no second request was sent");
        // A scrape after the round finished starts a new one.
        let (third, ()) = tokio::join!(scraper.scrape(timeout), async {
            let Some(Command::Scrape { reply, .. }) = commands.recv().await else {
                panic!("a new round asks again");
            };
            let _ = reply.send(Err("broken".to_owned()));
        });
        assert!(!Arc::ptr_eq(&first, &third));
        assert_eq!(third.up_family().series[0].value, Value::Single(0.0));
    }
}
