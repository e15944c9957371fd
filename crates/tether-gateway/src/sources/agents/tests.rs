//! Which of an agent's live answer and its push a scrape serves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tether_model::{Format, Label, MetricFamily, MetricType, Series, Value, parse};
use tokio_util::sync::CancellationToken;

use super::choose_parts;
use super::registry::{Answer, Command, Identity, Registered, Registry};
use super::scrape::Scraper;
use crate::config::IdentityCollision;
use crate::view::{Drops, Families, Origin, View};

fn identity(instance: &str) -> Identity {
    Identity::new(vec![
        Label::new("job", "app"),
        Label::new("instance", instance),
    ])
}

fn families(value: f64, target: &tether_model::TargetLabels) -> Families {
    let mut family = MetricFamily::new("rows", MetricType::Gauge);
    family.series.push(Series {
        labels: vec![],
        value: Value::Single(value),
        timestamp_ms: None,
    });
    let mut drops = Drops::default();
    Families::normalize(vec![family], Some(target), Origin::Peer, &mut drops)
}

/// The value of `rows` for `instance` in the merged, rendered view.
fn rows_of(parts: Vec<crate::sources::Part>) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    View::build(parts).render(Format::Text, &mut out);
    let parsed = parse(&out, Format::Text).expect("a valid exposition");
    let mut rows: Vec<(String, f64)> = parsed
        .iter()
        .filter(|f| f.name == "rows")
        .flat_map(|f| f.series.iter())
        .map(|s| {
            let instance = s
                .labels
                .iter()
                .find(|l| l.name == "instance")
                .map(|l| l.value.clone())
                .unwrap_or_default();
            let Value::Single(v) = s.value else {
                panic!("a gauge")
            };
            (instance, v)
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

#[tokio::test]
async fn an_agent_that_answered_then_pushed_and_left_during_the_round_is_served_once() {
    let registry = Arc::new(Registry::default());
    let Registered {
        guard: guard_a,
        commands: mut commands_a,
        ..
    } = registry
        .register(
            identity("a"),
            10,
            CancellationToken::new(),
            IdentityCollision::KeepConnected,
        )
        .expect("room");
    let Registered {
        guard: _guard_b,
        commands: mut commands_b,
        ..
    } = registry
        .register(
            identity("b"),
            10,
            CancellationToken::new(),
            IdentityCollision::KeepConnected,
        )
        .expect("room");
    let scraper = Scraper::new(Arc::clone(&registry));
    let agents = {
        let registry = Arc::clone(&registry);
        async move {
            // A answers at once.
            let Some(Command::Scrape { reply, .. }) = commands_a.recv().await else {
                panic!("a is asked");
            };
            let target_a = Arc::clone(guard_a.target());
            let identity_a = Arc::clone(guard_a.identity());
            let _ = reply.send(Ok(Answer {
                families: Arc::new(families(1.0, &target_a)),
                seq: registry.stamp(),
            }));
            // Then it pushes its final metrics and leaves, while the round
            // still waits for B.
            registry
                .store_push(
                    &identity_a,
                    &target_a,
                    families(2.0, &target_a),
                    Duration::from_secs(60),
                )
                .expect("within the limits");
            drop(guard_a);
            // Only now does B answer.
            let Some(Command::Scrape { reply, .. }) = commands_b.recv().await else {
                panic!("b is asked");
            };
            let target_b = Arc::new(identity("b").target_labels());
            let _ = reply.send(Ok(Answer {
                families: Arc::new(families(5.0, &target_b)),
                seq: registry.stamp(),
            }));
        }
    };
    let (round, ()) = tokio::join!(scraper.scrape(Duration::from_secs(30)), agents);
    let parts = choose_parts(&round, registry.pushes(Instant::now()));
    // A once, with its final metrics; B live.
    assert_eq!(
        rows_of(parts),
        [("a".to_owned(), 2.0), ("b".to_owned(), 5.0)]
    );
}

#[tokio::test]
async fn a_live_answer_newer_than_the_push_wins_and_old_pushes_of_connected_agents_stay_out() {
    let registry = Arc::new(Registry::default());
    let Registered {
        guard,
        mut commands,
        ..
    } = registry
        .register(
            identity("a"),
            10,
            CancellationToken::new(),
            IdentityCollision::KeepConnected,
        )
        .expect("room");
    let target = Arc::clone(guard.target());
    // A non-final push before the round.
    registry
        .store_push(
            guard.identity(),
            &target,
            families(1.0, &target),
            Duration::from_secs(60),
        )
        .expect("within the limits");
    let scraper = Scraper::new(Arc::clone(&registry));
    let answer = {
        let registry = Arc::clone(&registry);
        let target = Arc::clone(&target);
        async move {
            let Some(Command::Scrape { reply, .. }) = commands.recv().await else {
                panic!("asked");
            };
            let _ = reply.send(Ok(Answer {
                families: Arc::new(families(3.0, &target)),
                seq: registry.stamp(),
            }));
            commands
        }
    };
    let (round, mut commands) = tokio::join!(scraper.scrape(Duration::from_secs(30)), answer);
    let parts = choose_parts(&round, registry.pushes(Instant::now()));
    assert_eq!(rows_of(parts), [("a".to_owned(), 3.0)]);
    // The agent fails the next round: its push from before the round is
    // not served in its place (it is connected and pushed nothing since).
    let fail = async move {
        let Some(Command::Scrape { reply, .. }) = commands.recv().await else {
            panic!("asked");
        };
        let _ = reply.send(Err("broken".to_owned()));
    };
    let (round, ()) = tokio::join!(scraper.scrape(Duration::from_secs(30)), fail);
    let parts = choose_parts(&round, registry.pushes(Instant::now()));
    assert!(rows_of(parts).is_empty());
}
