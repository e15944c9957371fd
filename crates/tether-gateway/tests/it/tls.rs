//! TLS on both listeners, and mutual TLS when a client CA is configured.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tether_gateway::{Config, RawConfig};

use crate::support::config;
use tether_proto::{FrameDecoder, Hello, ServerKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::support::TestGateway;

/// A CA, a server certificate for `localhost` and a client certificate,
/// written as PEM files into a temporary directory.
struct Pki {
    dir: PathBuf,
    ca: CertificateDer<'static>,
    client_cert: CertificateDer<'static>,
    client_key: Vec<u8>,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("tether-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");
        let server_key = KeyPair::generate().expect("server key");
        let server = CertificateParams::new(vec!["localhost".to_owned()])
            .expect("server params")
            .signed_by(&server_key, &ca)
            .expect("server certificate");
        let client_key = KeyPair::generate().expect("client key");
        let client = CertificateParams::new(vec!["agent.example".to_owned()])
            .expect("client params")
            .signed_by(&client_key, &ca)
            .expect("client certificate");
        std::fs::write(dir.join("server.pem"), server.pem()).expect("write cert");
        std::fs::write(dir.join("server.key"), server_key.serialize_pem()).expect("write key");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write CA");
        Pki {
            ca: ca.der().clone(),
            client_cert: client.der().clone(),
            client_key: client_key.serialize_der(),
            dir,
        }
    }

    fn config(&self, mutual: bool) -> Config {
        config(RawConfig {
            tls_cert: Some(self.dir.join("server.pem")),
            tls_key: Some(self.dir.join("server.key")),
            tls_client_ca: mutual.then(|| self.dir.join("ca.pem")),
            ..RawConfig::loopback()
        })
    }

    fn connector(&self, with_client_cert: bool) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).expect("CA into roots");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
        let config = if with_client_cert {
            let key = PrivateKeyDer::try_from(self.client_key.clone()).expect("client key DER");
            builder
                .with_client_auth_cert(vec![self.client_cert.clone()], key)
                .expect("client auth")
        } else {
            builder.with_no_client_auth()
        };
        TlsConnector::from(Arc::new(config))
    }
}

/// Connects over TLS and completes the agent handshake; `None` when the
/// TLS handshake or the agent handshake fails.
async fn agent_handshake(connector: &TlsConnector, addr: std::net::SocketAddr) -> Option<()> {
    let tcp = TcpStream::connect(addr).await.ok()?;
    let server_name = ServerName::try_from("localhost").expect("valid name");
    let mut tls = connector.connect(server_name, tcp).await.ok()?;
    let hello = tether_proto::encode_to_vec(&tether_proto::ClientMessage::from(Hello::new(
        "",
        [("job", "j"), ("instance", "tls")],
    )));
    tls.write_all(&hello).await.ok()?;
    let mut buf = bytes::BytesMut::new();
    let mut decoder = FrameDecoder::new(1 << 20);
    loop {
        if let Some(body) = decoder.decode(&mut buf).ok()? {
            let message = tether_proto::decode_server_message(body).ok()?;
            return matches!(message.kind, Some(ServerKind::Welcome(_))).then_some(());
        }
        if tls.read_buf(&mut buf).await.ok()? == 0 {
            return None;
        }
    }
}

#[tokio::test]
async fn agents_and_scrapers_speak_tls() {
    let pki = Pki::new("plain");
    let config = pki.config(false);
    let gateway = TestGateway::start(config).await;
    let connector = pki.connector(false);
    assert!(
        agent_handshake(&connector, gateway.agents).await.is_some(),
        "agent handshake over TLS"
    );
    // HTTP over TLS.
    let tcp = TcpStream::connect(gateway.http).await.expect("connect");
    let mut tls = connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake with the HTTP listener");
    tls.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await.expect("read");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // Plain text to a TLS listener gets nothing usable.
    let mut plain = crate::support::RawAgent::connect(gateway.agents).await;
    plain
        .send(Hello::new("", [("job", "j"), ("instance", "plain")]))
        .await;
    assert!(
        plain.recv_raw_closed().await,
        "a plaintext agent is not served"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let pki = Pki::new("mutual");
    let config = pki.config(true);
    let gateway = TestGateway::start(config).await;
    assert!(
        agent_handshake(&pki.connector(true), gateway.agents)
            .await
            .is_some(),
        "a client certificate is admitted"
    );
    assert!(
        agent_handshake(&pki.connector(false), gateway.agents)
            .await
            .is_none(),
        "no client certificate, no service"
    );
    gateway.stop().await;
}

#[test]
fn unusable_tls_files_fail_validation_with_the_file_named() {
    let dir = std::env::temp_dir().join(format!("tether-tls-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("empty.pem"), "").expect("write");
    // The files are read while the configuration is validated, before
    // anything binds, so a bad certificate is a configuration error.
    let error = Config::from_raw(&RawConfig {
        tls_cert: Some(dir.join("empty.pem")),
        tls_key: Some(dir.join("missing.key")),
        ..RawConfig::loopback()
    })
    .expect_err("no certificate");
    assert!(error.to_string().contains("empty.pem"), "{error}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
