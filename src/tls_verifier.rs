//! The one rustls certificate verifier that checks less than the full WebPKI rules, shared by the
//! Kubernetes client (`insecure-skip-tls-verify`) and the PostgreSQL store (`sslmode=prefer` and
//! `verify-ca`). Whatever it skips, it always verifies the handshake signatures, so the peer
//! at least holds the key of the certificate it presented.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// Accepts any certificate ([`RelaxedVerifier::any_certificate`]) or checks the chain but not
/// the host name ([`RelaxedVerifier::chain_only`]).
#[derive(Debug)]
pub(crate) struct RelaxedVerifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl RelaxedVerifier {
    /// No certificate check at all (kubeconfig `insecure-skip-tls-verify`, libpq `prefer`).
    pub(crate) fn any_certificate(provider: Arc<CryptoProvider>) -> RelaxedVerifier {
        RelaxedVerifier {
            chain: None,
            provider,
        }
    }

    /// The chain must lead to a trusted root; the name in the certificate is not checked
    /// (libpq `verify-ca`).
    pub(crate) fn chain_only(
        chain: Arc<WebPkiServerVerifier>,
        provider: Arc<CryptoProvider>,
    ) -> RelaxedVerifier {
        RelaxedVerifier {
            chain: Some(chain),
            provider,
        }
    }
}

impl ServerCertVerifier for RelaxedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
