//! Installing the recorder globally: the only test in this binary that does.

use tether_exporter::{Error, ExporterBuilder};

use crate::support::{StreamClient, key};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_serves_the_stream_on_the_current_runtime_and_sets_the_global_recorder_once() {
    let handle = ExporterBuilder::new()
        .with_stream_listener(([127, 0, 0, 1], 0))
        .install()
        .expect("the first global recorder installs");
    metrics::counter!("installed.total").increment(4);
    let addr = handle.stream_local_addr().expect("a stream listener");
    let mut client = StreamClient::connect(addr).await;
    client
        .read_until("the global counter arrives", |client| {
            client.counter(&key("installed.total", &[])) == Some(4)
        })
        .await;
    assert!(
        handle
            .families()
            .iter()
            .any(|family| family.name == "installed_total")
    );

    let again = ExporterBuilder::new().install_recorder();
    assert!(matches!(again, Err(Error::RecorderAlreadyInstalled)));
    handle.shutdown();
    client.read_to_eof().await;
}
