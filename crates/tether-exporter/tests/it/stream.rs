//! The live event stream over real loopback sockets.

use std::sync::Arc;
use std::sync::Barrier;
use std::thread;
use std::time::Duration;

use metrics::Unit;
use tether_exporter::{ExporterBuilder, ExporterHandle, Format, StreamStats};
use tether_proto::EventMetricType;
use tokio::net::{TcpSocket, TcpStream};

use crate::support::{StreamClient, key, start, wait_until, within};

fn stats(handle: &ExporterHandle) -> StreamStats {
    handle.stream_stats().expect("a stream server")
}

/// The value of one exposition line starting with `prefix`.
fn exposition_value(handle: &ExporterHandle, prefix: &str) -> f64 {
    let text = String::from_utf8(handle.render(Format::Text)).expect("UTF-8");
    let line = text
        .lines()
        .find(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line {prefix} in\n{text}"));
    line.rsplit(' ')
        .next()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no value in {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_attached_throughout_ends_with_the_exact_total_of_concurrent_increments() {
    const THREADS: usize = 4;
    const PER_THREAD: u64 = 250_000;
    let (recorder, handle, server) = start(ExporterBuilder::new());
    let addr = handle.stream_local_addr().expect("a stream listener");
    let mut client = StreamClient::connect(addr).await;
    let counter = metrics::with_local_recorder(&recorder, || metrics::counter!("hits"));
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let counter = counter.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                for _ in 0..PER_THREAD {
                    counter.increment(1);
                }
            })
        })
        .collect();
    let total = THREADS as u64 * PER_THREAD;
    client
        .read_until("the client holds the exact total", |client| {
            client.counter(&key("hits", &[])) == Some(total)
        })
        .await;
    for thread in threads {
        thread.join().expect("a recording thread");
    }
    assert_eq!(exposition_value(&handle, "hits "), total as f64);
    handle.shutdown();
    within("the server stops", server)
        .await
        .expect("the server task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_client_gets_metadata_then_a_snapshot_of_current_values() {
    let (recorder, handle, server) = start(ExporterBuilder::new());
    metrics::with_local_recorder(&recorder, || {
        metrics::describe_counter!("jobs", Unit::Count, "Jobs done.");
        metrics::counter!("jobs", "queue" => "mail").increment(7);
        metrics::gauge!("temperature").set(3.5);
        // Recorded before anyone listened: not part of a snapshot.
        metrics::histogram!("latency").record(1.0);
    });
    let addr = handle.stream_local_addr().expect("a stream listener");
    let mut client = StreamClient::connect(addr).await;
    client
        .read_until("the snapshot arrives", |client| {
            client.counter(&key("jobs", &[("queue", "mail")])) == Some(7)
                && client.gauges.get(&key("temperature", &[])) == Some(&3.5)
        })
        .await;
    assert_eq!(
        client.kinds, "mcg",
        "one description, then one value per counter and gauge, nothing else"
    );
    let jobs = &client.metadata["jobs"];
    assert_eq!(jobs.metric_type(), EventMetricType::Counter);
    assert_eq!(jobs.unit.as_deref(), Some("count"));
    assert_eq!(jobs.description.as_deref(), Some("Jobs done."));
    assert!(client.samples.is_empty());

    // Then updates, histogram samples included.
    metrics::with_local_recorder(&recorder, || {
        metrics::counter!("jobs", "queue" => "mail").increment(1);
        metrics::histogram!("latency").record(0.5);
        metrics::histogram!("latency").record(0.25);
    });
    client
        .read_until("the updates arrive", |client| {
            client.counter(&key("jobs", &[("queue", "mail")])) == Some(8)
                && client.samples.get(&key("latency", &[])).map(Vec::len) == Some(2)
        })
        .await;
    assert_eq!(client.samples[&key("latency", &[])], [0.5, 0.25]);
    handle.shutdown();
    within("the server stops", server)
        .await
        .expect("the server task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_does_not_hold_up_recording_and_its_drops_are_counted() {
    const SAMPLES: u64 = 400_000;
    let (recorder, handle, server) = start(
        ExporterBuilder::new()
            .stream_client_buffer_bytes(64 * 1024)
            .stream_client_buffer_messages(1024)
            .stream_histogram_buffer_samples(100_000)
            .stream_flush_interval(Duration::from_millis(5)),
    );
    let addr = handle.stream_local_addr().expect("a stream listener");
    // A client with a small receive window that never reads.
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("a small buffer");
    let stalled = within("connecting", socket.connect(addr))
        .await
        .expect("the server accepts");
    let mut reader = StreamClient::connect(addr).await;
    let (counter, histogram) = metrics::with_local_recorder(&recorder, || {
        (metrics::counter!("done"), metrics::histogram!("work"))
    });
    // Both clients are attached once the reader has the snapshot.
    counter.increment(1);
    reader
        .read_until("the reader is attached", |client| {
            client.counter(&key("done", &[])) == Some(1)
        })
        .await;

    // The recording thread only has to finish: if anything on its path
    // waited for the stalled client, it never would.
    let recording = tokio::task::spawn_blocking(move || {
        for i in 0..SAMPLES {
            histogram.record(i as f64);
            counter.increment(1);
        }
    });
    within("the recording thread finishes", recording)
        .await
        .expect("the recording thread");

    wait_until("the stalled client's drops are counted", || {
        stats(&handle).events_dropped_client_queue > 0
    })
    .await;
    reader
        .read_until("the reader holds the exact total", |client| {
            client.counter(&key("done", &[])) == Some(SAMPLES + 1)
        })
        .await;
    let dropped = exposition_value(
        &handle,
        "tether_exporter_stream_events_dropped_total{reason=\"client_queue_full\"}",
    );
    assert!(dropped > 0.0, "drops are exported: {dropped}");
    assert_eq!(
        stats(&handle).clients,
        2,
        "the stalled client is still connected"
    );
    drop(stalled);
    handle.shutdown();
    within("the server stops", server)
        .await
        .expect("the server task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_leaving_does_not_stop_events_to_the_others() {
    let (recorder, handle, server) = start(ExporterBuilder::new());
    let addr = handle.stream_local_addr().expect("a stream listener");
    let beats = metrics::with_local_recorder(&recorder, || metrics::counter!("beats"));
    let beats_key = key("beats", &[]);
    let mut first = StreamClient::connect(addr).await;
    let mut second = StreamClient::connect(addr).await;
    beats.increment(1);
    for client in [&mut first, &mut second] {
        client
            .read_until("the first beat", |client| {
                client.counter(&beats_key) == Some(1)
            })
            .await;
    }

    drop(first);
    wait_until("the server notices the first client left", || {
        stats(&handle).clients == 1
    })
    .await;
    beats.increment(1);
    second
        .read_until("the second beat after the other left", |client| {
            client.counter(&beats_key) == Some(2)
        })
        .await;

    let mut third = StreamClient::connect(addr).await;
    third
        .read_until("the newcomer's snapshot", |client| {
            client.counter(&beats_key) == Some(2)
        })
        .await;
    beats.increment(1);
    for client in [&mut second, &mut third] {
        client
            .read_until("the third beat", |client| {
                client.counter(&beats_key) == Some(3)
            })
            .await;
    }
    let stats = stats(&handle);
    assert_eq!((stats.clients, stats.clients_accepted), (2, 3));
    assert_eq!(
        exposition_value(&handle, "tether_exporter_stream_clients "),
        2.0
    );
    handle.shutdown();
    within("the server stops", server)
        .await
        .expect("the server task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_over_the_cap_are_refused_and_counted() {
    let (recorder, handle, server) = start(ExporterBuilder::new().max_stream_clients(2));
    let addr = handle.stream_local_addr().expect("a stream listener");
    let gauge = metrics::with_local_recorder(&recorder, || metrics::gauge!("level"));
    gauge.set(1.0);
    let level = key("level", &[]);
    let mut first = StreamClient::connect(addr).await;
    let mut second = StreamClient::connect(addr).await;
    for client in [&mut first, &mut second] {
        client
            .read_until("the snapshot", |client| {
                client.gauges.get(&level) == Some(&1.0)
            })
            .await;
    }

    let mut refused = StreamClient::connect(addr).await;
    refused.read_to_eof().await;
    assert!(refused.bodies.is_empty(), "a refused client gets nothing");
    assert_eq!(stats(&handle).clients_refused, 1);
    assert_eq!(
        exposition_value(&handle, "tether_exporter_stream_clients_refused_total "),
        1.0
    );

    gauge.set(2.0);
    second
        .read_until("an update to a client within the cap", |client| {
            client.gauges.get(&level) == Some(&2.0)
        })
        .await;
    drop(first);
    wait_until("the first client's slot is free", || {
        stats(&handle).clients == 1
    })
    .await;
    let mut fourth = StreamClient::connect(addr).await;
    fourth
        .read_until("a snapshot for the client taking the free slot", |client| {
            client.gauges.get(&level) == Some(&2.0)
        })
        .await;
    assert_eq!(stats(&handle).clients_refused, 1);
    handle.shutdown();
    within("the server stops", server)
        .await
        .expect("the server task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_the_last_values_then_closes_and_stops_listening() {
    let (recorder, handle, server) = start(ExporterBuilder::new());
    let addr = handle.stream_local_addr().expect("a stream listener");
    let counter = metrics::with_local_recorder(&recorder, || metrics::counter!("final"));
    let mut client = StreamClient::connect(addr).await;
    counter.increment(1);
    client
        .read_until("the client is attached", |client| {
            client.counter(&key("final", &[])) == Some(1)
        })
        .await;
    counter.increment(41);
    handle.shutdown();
    client.read_to_eof().await;
    assert_eq!(client.counter(&key("final", &[])), Some(42));
    within("the server stops", server)
        .await
        .expect("the server task");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
    counter.increment(1);
    assert_eq!(
        exposition_value(&handle, "final "),
        43.0,
        "recording goes on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_token_given_to_the_builder_stops_the_server() {
    let token = tokio_util::sync::CancellationToken::new();
    let (_recorder, handle, server) = start(ExporterBuilder::new().with_shutdown(token.clone()));
    let addr = handle.stream_local_addr().expect("a stream listener");
    let mut client = StreamClient::connect(addr).await;
    token.cancel();
    client.read_to_eof().await;
    within("the server stops", server)
        .await
        .expect("the server task");
}

#[tokio::test]
async fn without_a_stream_listener_the_future_completes_at_once() {
    let (recorder, future) = ExporterBuilder::new().build().expect("the exporter builds");
    within("the future", future)
        .await
        .expect("nothing to serve");
    let handle = recorder.handle();
    assert_eq!(handle.stream_local_addr(), None);
    assert_eq!(handle.stream_stats(), None);
    assert!(
        handle.families().is_empty(),
        "no stream families without a stream"
    );
}
