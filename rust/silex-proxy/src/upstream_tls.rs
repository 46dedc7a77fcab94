//! TLS towards backends (`https`, `grpcs`): the rustls client configuration built from a
//! backend's [`UpstreamTls`], and the connector that connects and handshakes (the pools bound
//! both by the route's connect timeout, as nginx counts the handshake in
//! `proxy_connect_timeout`).
//!
//! - **Verification** is off unless the table says `verify` (ingress-nginx's default): the
//!   endpoint's certificate is then accepted whatever it is, but the handshake signatures are
//!   still checked. With `verify`, only `ca_pem` is trusted (no system roots: backends inside a
//!   cluster are signed by the cluster's own CAs) and the certificate must name `server_name`.
//! - **Name.** `server_name` (else the endpoint's IP address) is what the certificate is
//!   verified against and, with `sni`, the SNI sent.
//! - **ALPN** `h2` for gRPC over TLS, `http/1.1` otherwise.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use silex_routing::UpstreamTls;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::upstream::BoxError;

/// The rustls client configuration for `tls`; `http2` selects ALPN `h2`. The error names the
/// field (`ca_pem`, `cert_pem`, `key_pem`) and what is wrong.
pub(crate) fn client_config(
    tls: &UpstreamTls,
    http2: bool,
) -> Result<rustls::ClientConfig, (&'static str, String)> {
    let provider = Arc::new(crate::tls::provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ("tls", e.to_string()))?;
    let builder = if tls.verify {
        let roots = match &tls.ca_pem {
            Some(ca_pem) => root_store(ca_pem).map_err(|m| ("ca_pem", m))?,
            None => rustls::RootCertStore::empty(),
        };
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
    };
    let mut config = match (&tls.cert_pem, &tls.key_pem) {
        (Some(cert_pem), Some(key_pem)) => {
            // Checked like a served certificate (parses, key matches) for a clear error.
            let certified = crate::tls::certified_key(cert_pem, key_pem)?;
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                .map_err(|e| ("key_pem", format!("no usable PEM private key: {e}")))?;
            builder
                .with_client_auth_cert(certified.cert, key)
                .map_err(|e| ("cert_pem", e.to_string()))?
        }
        _ => builder.with_no_client_auth(),
    };
    let alpn = if http2 {
        crate::tls::ALPN_H2
    } else {
        crate::tls::ALPN_HTTP1
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    config.enable_sni = tls.sni;
    Ok(config)
}

/// The trust anchors of `ca_pem`: at least one PEM `CERTIFICATE`, each usable as a root.
fn root_store(ca_pem: &str) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("invalid PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("unusable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no CERTIFICATE block found".to_owned());
    }
    Ok(roots)
}

/// Checks CA certificates (PEM) as an upstream TLS client would load them; returns how many
/// there are. `Err` says what is wrong.
pub fn check_ca_certificates(ca_pem: &str) -> Result<usize, String> {
    root_store(ca_pem).map(|roots| roots.len())
}

/// `proxy-ssl-verify: off`: any certificate is accepted (the connection is encrypted but the
/// endpoint is not authenticated); handshake signatures are still verified.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Connects over TCP and handshakes TLS, both within the route's connect timeout.
#[derive(Clone)]
pub(crate) struct TlsConnector {
    tcp: HttpConnector,
    tls: tokio_rustls::TlsConnector,
    /// `None`: the endpoint's IP address.
    server_name: Option<ServerName<'static>>,
}

impl TlsConnector {
    pub(crate) fn new(
        tcp: HttpConnector,
        config: rustls::ClientConfig,
        server_name: &str,
    ) -> Result<Self, String> {
        let server_name = if server_name.is_empty() {
            None
        } else {
            let name = ServerName::try_from(server_name.to_owned())
                .map_err(|e| format!("server name {server_name:?}: {e}"))?;
            Some(name)
        };
        Ok(Self {
            tcp,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

type TlsConnecting =
    Pin<Box<dyn Future<Output = Result<TokioIo<UpstreamTlsStream>, BoxError>> + Send>>;

impl tower_service::Service<Uri> for TlsConnector {
    type Response = TokioIo<UpstreamTlsStream>;
    type Error = BoxError;
    type Future = TlsConnecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        let server_name = match &self.server_name {
            Some(name) => Ok(name.clone()),
            None => destination
                .host()
                .map(|host| host.trim_start_matches('[').trim_end_matches(']'))
                .and_then(|host| host.parse::<std::net::IpAddr>().ok())
                .map(ServerName::from)
                .ok_or_else(|| io::Error::other(format!("no server name for {destination}"))),
        };
        let connecting = self.tcp.call(destination);
        let tls = self.tls.clone();
        Box::pin(async move {
            let server_name = server_name?;
            let shown = server_name.to_str().into_owned();
            let tcp = connecting.await?.into_inner();
            let stream = tls.connect(server_name, tcp).await.map_err(|e| {
                io::Error::other(format!("TLS handshake (server name {shown}) failed: {e}"))
            })?;
            Ok(TokioIo::new(UpstreamTlsStream(stream)))
        })
    }
}

/// A TLS connection to an endpoint (it reports ALPN `h2` through hyper-util's `Connection`).
pub(crate) struct UpstreamTlsStream(TlsStream<TcpStream>);

impl Connection for UpstreamTlsStream {
    fn connected(&self) -> Connected {
        let (tcp, session) = self.0.get_ref();
        let connected = tcp.connected();
        if session.alpn_protocol() == Some(crate::tls::ALPN_H2) {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl AsyncRead for UpstreamTlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for UpstreamTlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
