//! TLS material for the fake apiserver: a fresh CA (the kubeconfig's
//! certificate-authority-data) and a serving certificate it signs for the
//! bound IP, 127.0.0.1, ::1 and "localhost"; the rustls server config
//! (ring, ALPN http/1.1 only); and random bearer tokens.

use std::fs::File;
use std::io::Read;
use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

pub struct Tls {
    pub config: Arc<ServerConfig>,
    pub ca_pem: String,
}

/// A CA and a serving certificate for `ip` (plus loopback and "localhost").
pub fn make(ip: IpAddr) -> Tls {
    let ca_key = KeyPair::generate().expect("generate CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "fake-apiserver-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");
    let issuer = Issuer::new(ca_params, ca_key);

    let mut sans: Vec<String> = Vec::new();
    for san in [ip.to_string(), "127.0.0.1".into(), "::1".into(), "localhost".into()] {
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    let key = KeyPair::generate().expect("generate serving key");
    let mut params = CertificateParams::new(sans).expect("serving cert params");
    params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer).expect("sign serving cert");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server TLS config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Tls {
        config: Arc::new(config),
        ca_pem: ca_cert.pem(),
    }
}

/// `n` random bytes from the kernel.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf
}

/// A random 32-hex-digit bearer token.
pub fn random_token() -> String {
    random_bytes(16).iter().map(|b| format!("{b:02x}")).collect()
}
