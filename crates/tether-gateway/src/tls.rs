//! TLS for both listeners: certificates loaded once at start-up, mutual
//! TLS when a client CA is configured.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::config::TlsFiles;
use crate::error::ConfigError;

/// Loads the server configuration; `alpn` lists the protocols offered.
pub(crate) fn server_config(
    files: &TlsFiles,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = load_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| ConfigError::Tls {
        path: files.key.display().to_string(),
        message: format!("no usable PEM private key: {e}"),
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Tls {
            path: files.cert.display().to_string(),
            message: e.to_string(),
        })?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca_path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in load_certs(ca_path)? {
                roots.add(cert).map_err(|e| ConfigError::Tls {
                    path: ca_path.display().to_string(),
                    message: format!("not a usable CA certificate: {e}"),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ConfigError::Tls {
                    path: ca_path.display().to_string(),
                    message: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| ConfigError::Tls {
            path: files.cert.display().to_string(),
            message: format!("certificate and key do not fit together: {e}"),
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| ConfigError::Tls {
            path: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| ConfigError::Tls {
            path: path.display().to_string(),
            message: format!("invalid PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(ConfigError::Tls {
            path: path.display().to_string(),
            message: "holds no PEM certificate".to_owned(),
        });
    }
    Ok(certs)
}
