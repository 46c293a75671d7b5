//! The TLS half of a probe: a real handshake (rustls, ring provider) that
//! accepts any certificate, as `curl -k` does. The server must still prove it
//! holds the key of the certificate it sent (handshake signatures are
//! checked); only the chain and the name are not.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
use std::io;
use std::net::{IpAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::outcome::Outcome;

/// Accepts every certificate (curl -k); checks handshake signatures with the provider.
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
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The client configuration, built once (TLS 1.2 and 1.3, ring).
fn config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .expect("the ring provider supports the default TLS versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// Runs a TLS handshake on a connected stream until `deadline`. TCP is already up, so every
/// failure but a reset is `TlsFailed` (the endpoint was reached).
pub fn handshake(mut stream: TcpStream, ip: IpAddr, deadline: Instant) -> Outcome {
    let mut conn = match ClientConnection::new(config(), ServerName::IpAddress(ip.into())) {
        Ok(c) => c,
        Err(e) => return Outcome::Error(format!("TLS client setup: {e}")),
    };
    while conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Outcome::TlsFailed("no TLS handshake before the timeout".into());
        }
        let left = left.max(Duration::from_millis(1));
        if let Err(e) = stream
            .set_read_timeout(Some(left))
            .and_then(|()| stream.set_write_timeout(Some(left)))
        {
            return Outcome::Error(format!("socket timeouts: {e}"));
        }
        match conn.complete_io(&mut stream) {
            Ok((0, 0)) if conn.is_handshaking() => {
                return Outcome::TlsFailed("connection closed during the TLS handshake".into())
            }
            Ok(_) => {}
            Err(e) => return classify(&e),
        }
    }
    let version = conn
        .protocol_version()
        .map(|v| match v {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
            other => format!("TLS version 0x{:04x}", u16::from(other)),
        })
        .unwrap_or_else(|| "TLS".into());
    let _ = stream.shutdown(std::net::Shutdown::Both);
    Outcome::TlsOk(version)
}

fn classify(e: &io::Error) -> Outcome {
    match Outcome::from_io(e) {
        Outcome::Reset => Outcome::Reset,
        Outcome::TimedOut => Outcome::TlsFailed("no TLS handshake before the timeout".into()),
        _ if e.kind() == io::ErrorKind::UnexpectedEof => {
            Outcome::TlsFailed("connection closed during the TLS handshake".into())
        }
        _ => Outcome::TlsFailed(e.to_string()),
    }
}
