//! The registry of connected agents and of data pushed by agents.
//!
//! A connection task registers its agent after the handshake and holds an
//! [`AgentGuard`] that unregisters it on every exit path. Scrapes take a
//! snapshot of the registered agents and ask each through its command
//! channel; the connection task owns the socket and answers.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tether_model::{Label, MetricFamily, TargetLabels};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Capacity of an agent's command queue. A scrape that finds it full
/// counts the agent as not answering rather than waiting: an agent that
/// is this far behind will not answer in time anyway.
pub(crate) const AGENT_COMMAND_QUEUE: usize = 8;

/// What identifies an agent: its `job`, `instance` and any other identity
/// labels it declared, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Identity(Vec<Label>);

impl Identity {
    /// An identity from the labels an agent declared; `job` first, then
    /// `instance`, then the rest by name, so rendering order is stable.
    pub(crate) fn new(mut labels: Vec<Label>) -> Identity {
        labels.sort_by(|a, b| {
            rank(&a.name)
                .cmp(&rank(&b.name))
                .then_with(|| a.name.cmp(&b.name))
        });
        Identity(labels)
    }

    /// The value of the label `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value.as_str())
    }

    /// The identity as target labels for rendering.
    pub(crate) fn target_labels(&self) -> TargetLabels {
        TargetLabels::new(self.0.clone())
    }
}

fn rank(name: &str) -> u8 {
    match name {
        "job" => 0,
        "instance" => 1,
        _ => 2,
    }
}

/// A request from a scrape to a connection task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Ask the agent for its metrics; answer on `reply` unless it is closed.
    Scrape {
        /// How long the agent has.
        timeout: Duration,
        /// Where the families go.
        reply: oneshot::Sender<Result<Arc<Vec<MetricFamily>>, String>>,
    },
}

/// A registered agent as scrapes see it.
#[derive(Debug, Clone)]
pub(crate) struct AgentHandle {
    /// The agent's identity.
    pub(crate) identity: Arc<Identity>,
    /// The identity rendered once for every scrape.
    pub(crate) target: Arc<TargetLabels>,
    /// The connection task's queue.
    commands: mpsc::Sender<Command>,
}

/// Why an agent did not contribute to a scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScrapeFailure {
    /// No answer before the deadline.
    Timeout,
    /// The connection closed or its queue was full.
    Unavailable,
    /// The agent answered with an error.
    Failed(String),
}

impl AgentHandle {
    /// Asks the agent for its families and waits at most `timeout`.
    pub(crate) async fn scrape(
        &self,
        timeout: Duration,
    ) -> Result<Arc<Vec<MetricFamily>>, ScrapeFailure> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .try_send(Command::Scrape { timeout, reply })
            .map_err(|_| ScrapeFailure::Unavailable)?;
        match tokio::time::timeout(timeout, answer).await {
            Err(_) => Err(ScrapeFailure::Timeout),
            Ok(Err(_)) => Err(ScrapeFailure::Unavailable),
            Ok(Ok(result)) => result.map_err(ScrapeFailure::Failed),
        }
    }
}

/// Families an agent pushed, served until they expire.
#[derive(Debug, Clone)]
pub(crate) struct Pushed {
    /// The rendered identity.
    pub(crate) target: Arc<TargetLabels>,
    /// The families.
    pub(crate) families: Arc<Vec<MetricFamily>>,
    /// When they stop being served.
    pub(crate) expires: Instant,
}

#[derive(Debug)]
struct Entry {
    handle: AgentHandle,
    /// Cancelled to close the connection (a newer one took its identity).
    close: CancellationToken,
}

#[derive(Debug, Default)]
struct State {
    agents: HashMap<u64, Entry>,
    by_identity: HashMap<Arc<Identity>, u64>,
    pushed: HashMap<Arc<Identity>, Pushed>,
}

/// Every connected agent and every unexpired push.
///
/// One mutex guards it all: sections are short (map inserts and clones of
/// `Arc`s), never await, and a scrape takes it once per round.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    state: Mutex<State>,
    next_id: AtomicU64,
}

/// Why an agent could not register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegisterError {
    /// The registry holds `max_agents` already.
    Full,
}

impl Registry {
    /// Registers an agent; an agent already connected with the same
    /// identity is told to close, as it is most likely the dead half of a
    /// reconnect. Returns the handle, the guard that unregisters on drop,
    /// and the command queue's receiving end.
    pub(crate) fn register(
        self: &Arc<Self>,
        identity: Identity,
        max_agents: usize,
        close: CancellationToken,
    ) -> Result<(AgentGuard, mpsc::Receiver<Command>), RegisterError> {
        let identity = Arc::new(identity);
        let (commands, receiver) = mpsc::channel(AGENT_COMMAND_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let handle = AgentHandle {
            target: Arc::new(identity.target_labels()),
            identity: Arc::clone(&identity),
            commands,
        };
        let mut state = self.state.lock();
        let replaced = state.by_identity.get(&identity).copied();
        if replaced.is_none() && state.agents.len() >= max_agents {
            return Err(RegisterError::Full);
        }
        if let Some(old) = replaced.and_then(|old| state.agents.remove(&old)) {
            old.close.cancel();
        }
        state.by_identity.insert(Arc::clone(&identity), id);
        // A live agent supersedes what it pushed before.
        state.pushed.remove(&identity);
        state.agents.insert(id, Entry { handle, close });
        Ok((
            AgentGuard {
                registry: Arc::clone(self),
                id,
                identity,
            },
            receiver,
        ))
    }

    /// The connected agents, in identity order.
    pub(crate) fn agents(&self) -> Vec<AgentHandle> {
        let state = self.state.lock();
        let mut agents: Vec<AgentHandle> =
            state.agents.values().map(|e| e.handle.clone()).collect();
        drop(state);
        agents.sort_by(|a, b| a.identity.cmp(&b.identity));
        agents
    }

    /// How many agents are connected.
    pub(crate) fn n_agents(&self) -> usize {
        self.state.lock().agents.len()
    }

    /// Stores what an agent pushed, replacing its previous push.
    pub(crate) fn store_push(
        &self,
        identity: &Arc<Identity>,
        target: &Arc<TargetLabels>,
        families: Vec<MetricFamily>,
        ttl: Duration,
    ) {
        let pushed = Pushed {
            target: Arc::clone(target),
            families: Arc::new(families),
            expires: Instant::now() + ttl,
        };
        self.state
            .lock()
            .pushed
            .insert(Arc::clone(identity), pushed);
    }

    /// Unexpired pushes of agents that are not connected (a connected
    /// agent is scraped instead), in identity order; drops expired ones.
    pub(crate) fn pushes_to_serve(&self, now: Instant) -> Vec<(Arc<Identity>, Pushed)> {
        let mut state = self.state.lock();
        state.pushed.retain(|_, pushed| pushed.expires > now);
        let mut pushes: Vec<(Arc<Identity>, Pushed)> = state
            .pushed
            .iter()
            .filter(|(identity, _)| !state.by_identity.contains_key(*identity))
            .map(|(identity, pushed)| (Arc::clone(identity), pushed.clone()))
            .collect();
        drop(state);
        pushes.sort_by(|a, b| a.0.cmp(&b.0));
        pushes
    }

    /// How many pushes are held.
    pub(crate) fn n_pushes(&self) -> usize {
        self.state.lock().pushed.len()
    }
}

/// Unregisters its agent when dropped, on every exit path of the
/// connection task.
#[derive(Debug)]
pub(crate) struct AgentGuard {
    registry: Arc<Registry>,
    id: u64,
    identity: Arc<Identity>,
}

impl AgentGuard {
    /// The registered identity.
    pub(crate) fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }
}

impl Drop for AgentGuard {
    fn drop(&mut self) {
        let mut state = self.registry.state.lock();
        if state.agents.remove(&self.id).is_some()
            && state.by_identity.get(&self.identity) == Some(&self.id)
        {
            state.by_identity.remove(&self.identity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(job: &str, instance: &str) -> Identity {
        Identity::new(vec![
            Label::new("instance", instance),
            Label::new("job", job),
        ])
    }

    #[test]
    fn identity_orders_job_then_instance_then_the_rest() {
        let id = Identity::new(vec![
            Label::new("zone", "z"),
            Label::new("instance", "i"),
            Label::new("job", "j"),
            Label::new("app", "a"),
        ]);
        let names: Vec<&str> = id.0.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["job", "instance", "app", "zone"]);
        assert_eq!(id.get("instance"), Some("i"));
    }

    #[test]
    fn a_reconnect_replaces_the_old_connection_and_guards_unregister() {
        let registry = Arc::new(Registry::default());
        let first_close = CancellationToken::new();
        let (first, _rx1) = registry
            .register(identity("a", "1"), 10, first_close.clone())
            .expect("room");
        let (second, _rx2) = registry
            .register(identity("a", "1"), 10, CancellationToken::new())
            .expect("replaces");
        assert!(
            first_close.is_cancelled(),
            "the older connection is told to close"
        );
        assert_eq!(registry.n_agents(), 1);
        // The old connection's guard must not unregister the new one.
        drop(first);
        assert_eq!(registry.n_agents(), 1);
        drop(second);
        assert_eq!(registry.n_agents(), 0);
    }

    #[test]
    fn the_cap_counts_distinct_identities() {
        let registry = Arc::new(Registry::default());
        let (_a, _ra) = registry
            .register(identity("a", "1"), 1, CancellationToken::new())
            .expect("room");
        assert_eq!(
            registry
                .register(identity("a", "2"), 1, CancellationToken::new())
                .map(|_| ()),
            Err(RegisterError::Full)
        );
        assert!(
            registry
                .register(identity("a", "1"), 1, CancellationToken::new())
                .is_ok(),
            "a reconnect fits"
        );
    }

    #[test]
    fn pushes_are_served_while_the_agent_is_away_and_until_they_expire() {
        let registry = Arc::new(Registry::default());
        let id = Arc::new(identity("batch", "b1"));
        let target = Arc::new(id.target_labels());
        registry.store_push(
            &id,
            &target,
            vec![MetricFamily::new("done", tether_model::MetricType::Gauge)],
            Duration::from_secs(60),
        );
        let now = Instant::now();
        assert_eq!(registry.pushes_to_serve(now).len(), 1);
        // While an agent of that identity is connected it is scraped instead.
        let (guard, _rx) = registry
            .register((*id).clone(), 10, CancellationToken::new())
            .expect("room");
        assert_eq!(registry.pushes_to_serve(now).len(), 0);
        drop(guard);
        registry.store_push(&id, &target, vec![], Duration::from_secs(60));
        assert_eq!(
            registry
                .pushes_to_serve(now + Duration::from_secs(61))
                .len(),
            0,
            "expired"
        );
        assert_eq!(registry.n_pushes(), 0, "expired pushes are dropped");
    }
}
