//! A certificate authority of the test's own, the server certificates it issues for
//! `127.0.0.1` and `localhost`, and a TLS client that says which certificate a server sends.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use crate::TempDir;

/// A CA and the server certificate it issued last, as files.
pub struct Pki {
    dir: TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
    /// The CA's certificate (PEM), for clients.
    pub ca_file: PathBuf,
    /// The server's certificate chain (PEM): what `[tls] cert_file` names.
    pub cert_file: PathBuf,
    /// The server's private key (PEM): what `[tls] key_file` names.
    pub key_file: PathBuf,
    /// The server certificate issued last (DER).
    pub leaf: Vec<u8>,
}

impl Pki {
    /// A new CA, and a server certificate from it in the files.
    pub fn new() -> Self {
        let dir = TempDir::new("pki");
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "streamgate test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let mut pki = Self {
            cert_file: dir.path().join("cert.pem"),
            key_file: dir.path().join("key.pem"),
            dir,
            ca,
            ca_key,
            ca_file,
            leaf: Vec::new(),
        };
        pki.issue();
        pki
    }

    /// Issues a new server certificate (with a new key) and puts it in the files, each one
    /// replaced whole (written beside it, then renamed over it).
    pub fn issue(&mut self) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "streamgate test server");
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let write = |path: &PathBuf, text: String| {
            let tmp = self.dir.path().join("next.pem");
            let mut f = std::fs::File::create(&tmp).unwrap();
            f.write_all(text.as_bytes()).unwrap();
            f.sync_all().unwrap();
            std::fs::rename(&tmp, path).unwrap();
        };
        write(&self.key_file, key.serialize_pem());
        write(&self.cert_file, cert.pem());
        self.leaf = cert.der().to_vec();
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// The certificate (DER) the TLS server at `addr` sends, checked against the CA in
/// `ca_file` for the name `127.0.0.1`; an error if the handshake fails.
pub fn served_certificate(addr: SocketAddr, ca_file: &PathBuf) -> Result<Vec<u8>, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_file(ca_file).map_err(|e| e.to_string())?;
    roots.add(ca).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let mut tcp =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
    }
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or_else(|| "no certificate".to_owned())
}
