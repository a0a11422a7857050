//! TLS termination with rustls: a listener's PEM certificate chain and key, HTTP/2 and
//! HTTP/1.1 offered by ALPN.

use crate::config::Tls;
use crate::ConfigError;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The server config of `tls`, read from its files now.
pub(crate) fn server_config(tls: &Tls) -> Result<rustls::ServerConfig, ConfigError> {
    let certs: Vec<CertificateDer<'static>> = {
        let pem = std::fs::read(&tls.cert).map_err(|e| {
            ConfigError::of_file(&tls.cert, format!("cannot read the certificate: {e}"))
        })?;
        rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| {
                ConfigError::of_file(&tls.cert, format!("not a PEM certificate chain: {e}"))
            })?
    };
    if certs.is_empty() {
        return Err(ConfigError::of_file(
            &tls.cert,
            "no certificate in the file",
        ));
    }
    let key: PrivateKeyDer<'static> = {
        let pem = std::fs::read(&tls.key)
            .map_err(|e| ConfigError::of_file(&tls.key, format!("cannot read the key: {e}")))?;
        rustls_pemfile::private_key(&mut pem.as_slice())
            .map_err(|e| ConfigError::of_file(&tls.key, format!("not a PEM private key: {e}")))?
            .ok_or_else(|| ConfigError::of_file(&tls.key, "no private key in the file"))?
    };
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::of_file(&tls.cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            ConfigError::of_file(
                &tls.key,
                format!("the key does not fit the certificate: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
