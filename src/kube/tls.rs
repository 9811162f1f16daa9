//! TLS to the API server with our own rustls configuration, plugged into ureq as a connector.
//!
//! ureq's `TlsConfig` cannot express kubeconfig's `tls-server-name` (verify the certificate
//! against a name other than the URL host) and panics on an unusable client certificate at
//! the first connection (ureq#1077). Building the rustls `ClientConfig` ourselves fixes both:
//! every certificate problem is a start-up error, and the verified name is ours to choose.
//! The price is ureq's `unversioned` transport API, which may change in a ureq minor release;
//! it is confined to this file.

use std::fmt;
use std::io::{Read, Write};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{
    Buffers, ConnectProxyConnector, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout,
    TcpConnector, Transport, TransportAdapter,
};

use super::error::KubeError;
use crate::tls_verifier::RelaxedVerifier;

/// What the TLS layer needs from the configuration.
pub(crate) struct TlsSettings<'a> {
    pub ca_pem: Option<&'a [u8]>,
    pub insecure: bool,
    /// PEM certificate chain and key.
    pub client_cert: Option<(&'a [u8], &'a [u8])>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds and validates the rustls configuration.
pub(crate) fn client_config(s: &TlsSettings<'_>) -> Result<Arc<ClientConfig>, KubeError> {
    let err = |m: String| KubeError::Config(m);
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(format!("tls: {e}")))?;
    let builder = if s.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(RelaxedVerifier::any_certificate(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        match s.ca_pem {
            Some(pem) => {
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert
                        .map_err(|e| err(format!("certificate authority is not valid PEM: {e}")))?;
                    roots
                        .add(cert)
                        .map_err(|e| err(format!("certificate authority cannot be used: {e}")))?;
                }
                if roots.is_empty() {
                    return Err(err("certificate authority holds no certificate".into()));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots)
    };
    let config = match s.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert_pem, key_pem)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
                .collect::<Result<_, _>>()
                .map_err(|e| err(format!("client certificate is not valid PEM: {e}")))?;
            if chain.is_empty() {
                return Err(err(
                    "client certificate: no certificate in the PEM data".into()
                ));
            }
            let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| {
                err(
                    "client key: no usable private key (PKCS#1, PKCS#8 or SEC1 PEM expected)"
                        .into(),
                )
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                err(format!(
                    "client certificate and key cannot be used together: {e}"
                ))
            })?
        }
    };
    Ok(Arc::new(config))
}

/// The ureq agent: proxy CONNECT, TCP, then our TLS.
pub(crate) fn agent(
    config: ureq::config::Config,
    tls: Arc<ClientConfig>,
    server_name: Option<&str>,
) -> Result<ureq::Agent, KubeError> {
    let server_name = match server_name {
        Some(n) => Some(ServerName::try_from(n.to_owned()).map_err(|e| {
            KubeError::Config(format!("tls-server-name {n:?} is not a valid name: {e}"))
        })?),
        None => None,
    };
    let connector =
        ().chain(ConnectProxyConnector::default())
            .chain(TcpConnector::default())
            .chain(KubeTls {
                config: tls,
                server_name,
            });
    Ok(ureq::Agent::with_parts(
        config,
        connector,
        DefaultResolver::default(),
    ))
}

struct KubeTls {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl fmt::Debug for KubeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeTls")
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl<In: Transport> Connector<In> for KubeTls {
    type Out = Either<In, KubeTlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => {
                let host = details.uri.host().unwrap_or_default();
                let host = host.trim_start_matches('[').trim_end_matches(']');
                ServerName::try_from(host.to_owned())
                    .map_err(|_| ureq::Error::Tls("the server host is not a valid TLS name"))?
            }
        };
        let mut conn = ClientConnection::new(self.config.clone(), name)?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        conn.complete_io(&mut sock)?;
        Ok(Some(Either::B(KubeTlsTransport {
            buffers: LazyBuffers::new(
                details.config.input_buffer_size(),
                details.config.output_buffer_size(),
            ),
            stream: StreamOwned { conn, sock },
        })))
    }
}

pub(crate) struct KubeTlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl fmt::Debug for KubeTlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KubeTlsTransport")
    }
}

impl Transport for KubeTlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let n = self.stream.read(input)?;
        self.buffers.input_appended(n);
        Ok(n > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}
