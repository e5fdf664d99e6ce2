//! The TLS listener's certificate: loaded from PEM files, or, when none is configured and the
//! default paths are empty, a self-signed development pair generated once into `certs/`.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("cannot read private key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("cannot write development certificate into {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("certificate and key do not fit together: {0}")]
    Config(#[from] rustls::Error),
    #[error("cannot generate development certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Installs the process-wide crypto provider (aws-lc-rs). Safe to call more than once.
pub fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Writes a self-signed certificate for localhost and 127.0.0.1 unless both files exist.
pub fn ensure_dev_cert(cert: &Path, key: &Path) -> Result<bool, TlsError> {
    if cert.exists() && key.exists() {
        return Ok(false);
    }
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()])?;
    for path in [cert, key] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| TlsError::Write { path: dir.display().to_string(), source })?;
        }
    }
    std::fs::write(cert, generated.cert.pem()).map_err(|source| TlsError::Write { path: cert.display().to_string(), source })?;
    write_private(key, generated.signing_key.serialize_pem().as_bytes())
        .map_err(|source| TlsError::Write { path: key.display().to_string(), source })?;
    Ok(true)
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// A server config offering only HTTP/1.1, which WebSocket upgrades need.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert { path: cert.display().to_string(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Cert { path: cert.display().to_string(), reason: "no certificate in file".into() });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key { path: key.display().to_string(), reason: e.to_string() })?;
    let mut config = ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
