//! Optional TLS under the handshake, for clusters whose links leave the
//! machine (`--tls-cert`, `--tls-key`, `--tls-ca`).
//!
//! Both sides present a certificate and both verify the other's against the
//! cluster's CA: mutual TLS, so a peer whose certificate the node does not
//! trust is refused before it can say anything. The dialling side also
//! checks that the certificate is for the host part of the node name it
//! dialled (`node_a@10.0.0.1` needs `10.0.0.1` in the certificate's names).
//! The cookie handshake runs inside, unchanged: TLS protects the link's
//! bytes, the cookie decides who is a member.

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A connection, plain or encrypted.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}
pub type BoxedStream = Box<dyn Stream>;

/// Where the certificate, its key and the trusted CA come from.
#[derive(Debug, Clone)]
pub struct TlsFiles<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    pub ca: &'a Path,
}

/// The TLS settings of a node's links, both directions.
pub struct Tls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl Tls {
    /// Loads the files and checks they make a usable configuration.
    pub fn load(files: &TlsFiles<'_>) -> Result<Self, String> {
        let certs = read_certs(files.cert)?;
        let key = PrivateKeyDer::from_pem_file(files.key).map_err(|e| {
            format!(
                "--tls-key {}: no usable private key: {e}",
                files.key.display()
            )
        })?;
        let mut roots = RootCertStore::empty();
        for ca in read_certs(files.ca)? {
            roots
                .add(ca)
                .map_err(|e| format!("--tls-ca {}: {e}", files.ca.display()))?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let bad =
            |e: rustls::Error| format!("the TLS certificate and key do not work together: {e}");
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| format!("--tls-ca {}: {e}", files.ca.display()))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(bad)?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(bad)?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(bad)?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(bad)?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// Opens TLS over a connection this node dialled to `host`.
    pub async fn connect(&self, host: &str, tcp: TcpStream) -> Result<BoxedStream, String> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("`{host}` cannot be checked against a certificate: {e}"))?;
        let stream = self
            .connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        Ok(Box::new(stream))
    }

    /// Opens TLS over a connection a peer dialled.
    pub async fn accept(&self, tcp: TcpStream) -> Result<BoxedStream, String> {
        let stream = self
            .acceptor
            .accept(tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        Ok(Box::new(stream))
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: cannot read PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no PEM certificate", path.display()));
    }
    Ok(certs)
}
