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
use tether_model::{Label, TargetLabels};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::IdentityCollision;
use crate::view::Families;

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

/// An agent's answer to a scrape, normalized, with the registry's stamp
/// of when it arrived (see [`Registry::stamp`]).
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// The families.
    pub(crate) families: Arc<Families>,
    /// When it arrived, in the registry's order of events.
    pub(crate) seq: u64,
}

/// A request from a scrape to a connection task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Ask the agent for its metrics; answer on `reply` unless it is closed.
    Scrape {
        /// How long the agent has.
        timeout: Duration,
        /// Where the families go.
        reply: oneshot::Sender<Result<Answer, String>>,
    },
    /// Show the agent is alive: ping it, and answer on `reply` as soon as
    /// anything is heard from it.
    Probe {
        /// Told when the agent is heard from.
        reply: oneshot::Sender<()>,
    },
}

/// A registered agent as scrapes see it.
#[derive(Debug, Clone)]
pub(crate) struct AgentHandle {
    /// The registration's number.
    id: u64,
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
    /// Whether the agent shows it is alive (answers a ping, or sends
    /// anything) within `timeout`. A connection too busy to take the
    /// question (its queue full) is alive; one that has closed is not.
    pub(crate) async fn probe(&self, timeout: Duration) -> bool {
        let (reply, heard) = oneshot::channel();
        match self.commands.try_send(Command::Probe { reply }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return true,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
        }
        matches!(tokio::time::timeout(timeout, heard).await, Ok(Ok(())))
    }

    /// Asks the agent for its families and waits at most `timeout`.
    pub(crate) async fn scrape(&self, timeout: Duration) -> Result<Answer, ScrapeFailure> {
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
    pub(crate) families: Arc<Families>,
    /// When they stop being served.
    pub(crate) expires: Instant,
    /// When they arrived, in the registry's order of events.
    pub(crate) seq: u64,
}

/// A push held, as a scrape sees it.
#[derive(Debug, Clone)]
pub(crate) struct HeldPush {
    /// Whose it is.
    pub(crate) identity: Arc<Identity>,
    /// What was pushed.
    pub(crate) pushed: Pushed,
    /// Whether an agent of that identity is connected now.
    pub(crate) connected: bool,
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
    /// `approx_bytes` of every push in `pushed`.
    pushed_bytes: usize,
}

impl State {
    fn remove_push(&mut self, identity: &Identity) {
        if let Some(old) = self.pushed.remove(identity) {
            self.pushed_bytes -= old.families.approx_bytes();
        }
    }
}

/// How much pushed data the registry holds at most. Past either bound the
/// oldest pushes are dropped first; a push larger than the byte bound on
/// its own is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PushLimits {
    /// Pushes held, one per identity.
    pub(crate) max_pushes: usize,
    /// Bytes of pushed families held (their `approx_bytes`).
    pub(crate) max_bytes: usize,
}

impl Default for PushLimits {
    fn default() -> PushLimits {
        PushLimits {
            max_pushes: crate::config::DEFAULT_MAX_PUSHES,
            max_bytes: crate::config::DEFAULT_MAX_PUSH_BYTES,
        }
    }
}

/// A push larger on its own than every push may be together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PushTooLarge {
    /// Its size.
    pub(crate) bytes: usize,
    /// The bound.
    pub(crate) max_bytes: usize,
}

/// Every connected agent and every unexpired push.
///
/// One mutex guards it all: sections are short (map inserts and clones of
/// `Arc`s), never await, and a scrape takes it once per round.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    state: Mutex<State>,
    push_limits: PushLimits,
    next_id: AtomicU64,
    /// The order of answers, pushes and rounds: a scrape compares stamps
    /// to tell which of an agent's answer and its push is newer.
    next_seq: AtomicU64,
}

/// Why an agent could not register.
#[derive(Debug, Clone)]
pub(crate) enum RegisterError {
    /// The registry holds `max_agents` already.
    Full,
    /// Another connection holds the identity, and the policy keeps it.
    InUse {
        /// The connection holding it.
        holder: AgentHandle,
    },
}

/// A registered agent: the guard that unregisters it, its command queue,
/// and whether it took its identity from an older connection.
#[derive(Debug)]
pub(crate) struct Registered {
    pub(crate) guard: AgentGuard,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) replaced: bool,
}

impl Registry {
    /// A registry holding at most `push_limits` of pushed data.
    pub(crate) fn with_push_limits(push_limits: PushLimits) -> Registry {
        Registry {
            push_limits,
            ..Registry::default()
        }
    }

    /// The next stamp in the order of events; stamps only grow.
    pub(crate) fn stamp(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Registers an agent. When a connected agent has the same identity,
    /// `policy` decides: [`IdentityCollision::KeepConnected`] leaves it
    /// and answers [`RegisterError::InUse`] with its handle (the caller
    /// may probe it and [`close`](Self::close) it when it is dead);
    /// [`IdentityCollision::NewestWins`] tells it to close and registers
    /// the newcomer.
    pub(crate) fn register(
        self: &Arc<Self>,
        identity: Identity,
        max_agents: usize,
        close: CancellationToken,
        policy: IdentityCollision,
    ) -> Result<Registered, RegisterError> {
        let identity = Arc::new(identity);
        let (commands, receiver) = mpsc::channel(AGENT_COMMAND_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let handle = AgentHandle {
            id,
            target: Arc::new(identity.target_labels()),
            identity: Arc::clone(&identity),
            commands,
        };
        let handle_for_entry = handle.clone();
        let mut state = self.state.lock();
        let holder = state.by_identity.get(&identity).copied();
        if holder.is_none() && state.agents.len() >= max_agents {
            return Err(RegisterError::Full);
        }
        if let Some(holder) = holder.and_then(|old| state.agents.get(&old))
            && policy == IdentityCollision::KeepConnected
        {
            return Err(RegisterError::InUse {
                holder: holder.handle.clone(),
            });
        }
        let replaced = holder.and_then(|old| state.agents.remove(&old));
        if let Some(old) = &replaced {
            old.close.cancel();
        }
        state.by_identity.insert(Arc::clone(&identity), id);
        // A live agent supersedes what it pushed before.
        state.remove_push(&identity);
        state.agents.insert(
            id,
            Entry {
                handle: handle_for_entry,
                close,
            },
        );
        let target = Arc::clone(&handle.target);
        Ok(Registered {
            guard: AgentGuard {
                registry: Arc::clone(self),
                id,
                identity,
                target,
            },
            commands: receiver,
            replaced: replaced.is_some(),
        })
    }

    /// Closes the connection of `holder` if it is still registered: it
    /// did not show it is alive when another connection claimed its
    /// identity. Answers whether it was.
    pub(crate) fn close(&self, holder: &AgentHandle) -> bool {
        let mut state = self.state.lock();
        let Some(entry) = state.agents.remove(&holder.id) else {
            return false;
        };
        if state.by_identity.get(&holder.identity) == Some(&holder.id) {
            state.by_identity.remove(&holder.identity);
        }
        entry.close.cancel();
        true
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

    /// Stores what an agent pushed, replacing its previous push; drops the
    /// oldest pushes while the limits would be passed, and answers how many.
    pub(crate) fn store_push(
        &self,
        identity: &Arc<Identity>,
        target: &Arc<TargetLabels>,
        families: Families,
        ttl: Duration,
    ) -> Result<usize, PushTooLarge> {
        let limits = self.push_limits;
        let bytes = families.approx_bytes();
        if bytes > limits.max_bytes {
            return Err(PushTooLarge {
                bytes,
                max_bytes: limits.max_bytes,
            });
        }
        let pushed = Pushed {
            target: Arc::clone(target),
            families: Arc::new(families),
            expires: Instant::now() + ttl,
            seq: self.stamp(),
        };
        let mut state = self.state.lock();
        state.remove_push(identity);
        let mut evicted = 0;
        while state.pushed.len() >= limits.max_pushes
            || state.pushed_bytes + bytes > limits.max_bytes
        {
            // Linear in the pushes held, which the count bounds; evictions
            // happen only at the limit.
            let Some(oldest) = state
                .pushed
                .iter()
                .min_by_key(|(_, p)| p.seq)
                .map(|(identity, _)| Arc::clone(identity))
            else {
                break;
            };
            state.remove_push(&oldest);
            evicted += 1;
        }
        state.pushed_bytes += bytes;
        state.pushed.insert(Arc::clone(identity), pushed);
        Ok(evicted)
    }

    /// Bytes of pushed families held now.
    pub(crate) fn push_bytes(&self) -> usize {
        self.state.lock().pushed_bytes
    }

    /// Every unexpired push, in identity order, with whether its agent is
    /// connected; drops expired ones. Which of a push and a live answer is
    /// served is the scrape's decision (`super::choose_parts`).
    pub(crate) fn pushes(&self, now: Instant) -> Vec<HeldPush> {
        let mut state = self.state.lock();
        let mut freed = 0;
        state.pushed.retain(|_, pushed| {
            let keep = pushed.expires > now;
            if !keep {
                freed += pushed.families.approx_bytes();
            }
            keep
        });
        state.pushed_bytes -= freed;
        let mut pushes: Vec<HeldPush> = state
            .pushed
            .iter()
            .map(|(identity, pushed)| HeldPush {
                identity: Arc::clone(identity),
                pushed: pushed.clone(),
                connected: state.by_identity.contains_key(identity),
            })
            .collect();
        drop(state);
        pushes.sort_by(|a, b| a.identity.cmp(&b.identity));
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
    target: Arc<TargetLabels>,
}

impl AgentGuard {
    /// The registered identity.
    pub(crate) fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    /// The identity as target labels, rendered once.
    pub(crate) fn target(&self) -> &Arc<TargetLabels> {
        &self.target
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

    /// Registers `identity` with a fresh close token, as a connection would.
    fn join(
        registry: &Arc<Registry>,
        identity: Identity,
        max_agents: usize,
        policy: IdentityCollision,
    ) -> Result<(Registered, CancellationToken), RegisterError> {
        let close = CancellationToken::new();
        registry
            .register(identity, max_agents, close.clone(), policy)
            .map(|registered| (registered, close))
    }

    #[test]
    fn with_newest_wins_a_reconnect_replaces_the_old_connection_and_guards_unregister() {
        let registry = Arc::new(Registry::default());
        let newest = IdentityCollision::NewestWins;
        let (first, first_close) = join(&registry, identity("a", "1"), 10, newest).expect("room");
        assert!(!first.replaced);
        let (second, _) = join(&registry, identity("a", "1"), 10, newest).expect("replaces");
        assert!(second.replaced);
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
    fn by_default_the_connected_agent_keeps_its_identity_until_it_is_closed() {
        let registry = Arc::new(Registry::default());
        let keep = IdentityCollision::KeepConnected;
        let (first, first_close) = join(&registry, identity("a", "1"), 10, keep).expect("room");
        let Err(RegisterError::InUse { holder }) = join(&registry, identity("a", "1"), 10, keep)
        else {
            panic!("the newcomer is turned away");
        };
        assert!(!first_close.is_cancelled());
        assert_eq!(registry.n_agents(), 1);
        // Found dead: closed, and the identity is free.
        assert!(registry.close(&holder));
        assert!(first_close.is_cancelled());
        assert!(!registry.close(&holder), "closed once");
        let (second, _) = join(&registry, identity("a", "1"), 10, keep).expect("free now");
        drop(first);
        assert_eq!(registry.n_agents(), 1, "the old guard leaves the new agent");
        drop(second);
        assert_eq!(registry.n_agents(), 0);
    }

    #[tokio::test]
    async fn a_holder_too_busy_to_be_asked_is_alive_and_a_closed_one_is_not() {
        let registry = Arc::new(Registry::default());
        let keep = IdentityCollision::KeepConnected;
        let (holder, _) = join(&registry, identity("a", "1"), 10, keep).expect("room");
        let Err(RegisterError::InUse { holder: handle }) =
            join(&registry, identity("a", "1"), 10, keep)
        else {
            panic!("the identity is held");
        };
        // Its connection task does not read its queue: fill it.
        for _ in 0..AGENT_COMMAND_QUEUE {
            let (reply, _) = oneshot::channel();
            handle
                .commands
                .try_send(Command::Probe { reply })
                .expect("room in the queue");
        }
        assert!(handle.probe(Duration::from_secs(1)).await, "busy is alive");
        drop(holder);
        assert!(!handle.probe(Duration::from_secs(1)).await, "closed is not");
    }

    #[test]
    fn the_cap_counts_distinct_identities() {
        let registry = Arc::new(Registry::default());
        let newest = IdentityCollision::NewestWins;
        let _a = join(&registry, identity("a", "1"), 1, newest).expect("room");
        assert!(matches!(
            join(&registry, identity("a", "2"), 1, newest),
            Err(RegisterError::Full)
        ));
        assert!(
            join(&registry, identity("a", "1"), 1, newest).is_ok(),
            "a reconnect fits"
        );
    }

    #[test]
    fn pushes_are_held_until_they_expire_and_say_whether_their_agent_is_connected() {
        let registry = Arc::new(Registry::default());
        let id = Arc::new(identity("batch", "b1"));
        let target = Arc::new(id.target_labels());
        registry
            .store_push(&id, &target, Families::empty(), Duration::from_secs(60))
            .expect("within the limits");
        let now = Instant::now();
        let held = registry.pushes(now);
        assert_eq!(held.len(), 1);
        assert!(!held[0].connected);
        // A reconnect supersedes the push.
        let Registered {
            guard,
            commands: _rx,
            ..
        } = registry
            .register(
                (*id).clone(),
                10,
                CancellationToken::new(),
                IdentityCollision::KeepConnected,
            )
            .expect("room");
        assert_eq!(registry.pushes(now).len(), 0);
        registry
            .store_push(&id, &target, Families::empty(), Duration::from_secs(60))
            .expect("within the limits");
        assert!(registry.pushes(now)[0].connected);
        drop(guard);
        assert_eq!(
            registry.pushes(now + Duration::from_secs(61)).len(),
            0,
            "expired"
        );
        assert_eq!(registry.n_pushes(), 0, "expired pushes are dropped");
    }

    #[test]
    fn pushes_past_the_limits_drop_the_oldest_and_oversized_ones_are_refused() {
        use tether_model::{MetricFamily, MetricType, Series, Value};
        let families = |n_series: usize| {
            let mut family = MetricFamily::new("g", MetricType::Gauge);
            for i in 0..n_series {
                family.series.push(Series {
                    labels: vec![Label::new("i", i.to_string())],
                    value: Value::Single(1.0),
                    timestamp_ms: None,
                });
            }
            let mut drops = crate::view::Drops::default();
            Families::normalize(vec![family], None, crate::view::Origin::Peer, &mut drops)
        };
        let one = families(10).approx_bytes();
        let registry = Registry::with_push_limits(PushLimits {
            max_pushes: 3,
            max_bytes: one * 3 + one / 2,
        });
        let ttl = Duration::from_secs(60);
        let store = |instance: &str, families: Families| {
            let id = Arc::new(identity("batch", instance));
            let target = Arc::new(id.target_labels());
            registry.store_push(&id, &target, families, ttl)
        };
        for instance in ["1", "2", "3"] {
            assert_eq!(store(instance, families(10)), Ok(0));
        }
        // A fourth push: the count limit drops the oldest.
        assert_eq!(store("4", families(10)), Ok(1));
        let held: Vec<String> = registry
            .pushes(Instant::now())
            .iter()
            .filter_map(|h| h.identity.get("instance").map(str::to_owned))
            .collect();
        assert_eq!(held, ["2", "3", "4"]);
        // A push of twice the size: the byte limit drops two.
        assert_eq!(store("5", families(20)), Ok(2));
        assert!(registry.push_bytes() <= one * 3 + one / 2);
        // Replacing a push frees its bytes first.
        assert_eq!(store("5", families(20)), Ok(0));
        // Larger than every push may be together: refused.
        assert!(store("6", families(40)).is_err());
        assert_eq!(registry.n_pushes(), 2);
    }
}
