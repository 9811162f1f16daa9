//! rustls configuration for PostgreSQL, one per sslmode.
//!
//! tokio-postgres only knows disable/prefer/require and leaves verification to the TLS connector,
//! so the libpq modes are implemented here: which roots are trusted and how much of the
//! certificate is checked.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{PgSslMode, PgTarget, StoreError};
use crate::tls_verifier::RelaxedVerifier;

/// `None` for `sslmode=disable`.
pub(crate) fn connector(target: &PgTarget) -> Result<Option<MakeRustlsConnect>, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match target.ssl_mode {
        PgSslMode::Disable => return Ok(None),
        // libpq's default: encryption against passive listeners only.
        PgSslMode::Prefer => Arc::new(RelaxedVerifier::any_certificate(provider.clone())),
        PgSslMode::VerifyCa => Arc::new(RelaxedVerifier::chain_only(
            webpki(target, &provider)?,
            provider.clone(),
        )),
        PgSslMode::Require | PgSslMode::VerifyFull => webpki(target, &provider)?,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(MakeRustlsConnect::new(config)))
}

fn webpki(
    target: &PgTarget,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, StoreError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = &target.root_cert {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| {
                StoreError::Tls(format!(
                    "cannot read sslrootcert {}: {e}; mount the CA bundle (PEM) there",
                    path.display()
                ))
            })?;
        if certs.is_empty() {
            return Err(StoreError::Tls(format!(
                "sslrootcert {} contains no PEM certificate",
                path.display()
            )));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| StoreError::Tls(format!("sslrootcert {}: {e}", path.display())))?;
        }
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| StoreError::Tls(e.to_string()))
}
