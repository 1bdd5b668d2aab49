//! The byte stream a client speaks over: plain TCP, or TLS (rustls) for `grpcs://` and
//! `https://` targets. A [`Dialer`] holds how to reach one target (its address and, for TLS,
//! the connector and server name), so a connection redials exactly as it first dialed.

use std::{
    io,
    path::PathBuf,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use anyhow::Context as _;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{
    TlsConnector,
    client::TlsStream,
    rustls::{
        self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
        client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
    },
};

/// How TLS targets are verified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Trust the CA certificates in this PEM file instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (a test setup's self-signed one): the traffic is encrypted but
    /// the server is not authenticated.
    pub insecure: bool,
}

/// How to reach one target: its `host:port`, and for TLS the connector and the name the
/// certificate must carry.
#[derive(Clone)]
pub struct Dialer {
    authority: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Dialer {
    /// Plain TCP to `authority` (`host:port`).
    pub fn plain(authority: &str) -> Self {
        Self {
            authority: authority.to_owned(),
            tls: None,
        }
    }

    /// TLS to `authority`, whose certificate must name `host`, offering `alpn` (`h2`,
    /// `http/1.1`), verified as `options` say.
    pub fn tls(
        authority: &str,
        host: &str,
        options: &TlsOptions,
        alpn: &[u8],
    ) -> anyhow::Result<Self> {
        let name = ServerName::try_from(host.to_owned())
            .with_context(|| format!("`{host}` is not a DNS name or IP address"))?;
        let mut config = client_config(options)?;
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(Self {
            authority: authority.to_owned(),
            tls: Some((TlsConnector::from(Arc::new(config)), name)),
        })
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Connects (and completes the TLS handshake, for TLS targets).
    pub async fn dial(&self) -> io::Result<Socket> {
        let socket = TcpStream::connect(&self.authority).await?;
        let _ = socket.set_nodelay(true);
        match &self.tls {
            None => Ok(Socket::Plain(socket)),
            Some((connector, name)) => {
                let stream = connector.connect(name.clone(), socket).await?;
                Ok(Socket::Tls(Box::new(stream)))
            }
        }
    }
}

/// A connected stream, plain or TLS.
pub enum Socket {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Socket {
    /// Whether the peer closed an idle connection (or sent on it unasked, which an HTTP/1.1
    /// server only does to close it). With nothing new, tokio answers from its readiness
    /// flags without a syscall.
    pub fn closed_while_idle(&self) -> bool {
        let mut probe = [0u8; 1];
        let tcp = match self {
            Socket::Plain(tcp) => {
                return !matches!(
                    tcp.try_read(&mut probe),
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock
                );
            }
            // A look at the TCP socket under the TLS session, consuming nothing.
            Socket::Tls(stream) => stream.get_ref().0,
        };
        let mut buf = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match tcp.poll_peek(&mut cx, &mut buf) {
            Poll::Pending => false,
            Poll::Ready(Ok(_)) | Poll::Ready(Err(_)) => true,
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Socket::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Socket::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Socket::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Socket::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

fn client_config(options: &TlsOptions) -> anyhow::Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS: no protocol version the crypto provider supports")?;
    if options.insecure {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth());
    }
    let mut roots = RootCertStore::empty();
    match &options.ca_file {
        Some(path) => {
            let certificates = CertificateDer::pem_file_iter(path)
                .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
                .map_err(|error| {
                    anyhow::anyhow!(
                        "--tls-ca: cannot read PEM certificates from {}: {error}",
                        path.display()
                    )
                })?;
            anyhow::ensure!(
                !certificates.is_empty(),
                "--tls-ca: {} holds no PEM certificate",
                path.display()
            );
            for certificate in certificates {
                roots.add(certificate).with_context(|| {
                    format!("--tls-ca: a certificate in {} is invalid", path.display())
                })?;
            }
        }
        None => {
            let system = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(system.certs);
            anyhow::ensure!(
                !roots.is_empty(),
                "TLS: no system CA certificates found; give --tls-ca FILE (PEM)"
            );
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// `--tls-insecure`: accepts any certificate, still checking the handshake's signatures so
/// the session is encrypted to whoever holds the presented key.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
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
