//! TLS for both ports: each port's certificate chain and private key, read at start and read
//! again on demand (`TlsConfig::reload`, which `vexil serve` calls on SIGHUP).
//!
//! A port's rustls configuration is built once; its certificate resolver hands every handshake
//! the certificate held in an `ArcSwap` (one atomic load: no file is read, nothing is parsed on
//! the handshake path). A reload reads both files, parses them and checks that the key matches
//! the certificate before swapping the new pair in, so a missing, broken or half-written pair
//! keeps the certificate in use. Connections already open keep the certificate they were
//! handshaken with; only new handshakes see the new one.
//!
//! Errors name the file at fault and say what is wrong with it, never what it holds (a key
//! file's contents are never in an error or a log line).

use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use crate::TlsPem;

/// The largest certificate or key file read (a chain is a few kilobytes).
const MAX_PEM_BYTES: u64 = 1 << 20;

/// Why a certificate or key could not be loaded. `file` is the file's path (or, for PEM held in
/// memory, a description of it).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {file}: {error}")]
    Read { file: String, error: std::io::Error },
    #[error("{file}: larger than {MAX_PEM_BYTES} bytes; not a PEM certificate or key")]
    TooLarge { file: String },
    #[error("{file}: not a usable certificate chain: {reason}")]
    Certificate { file: String, reason: String },
    #[error("{file}: not a usable private key: {reason}")]
    Key { file: String, reason: String },
    #[error("the private key in {key} does not match the certificate in {cert}")]
    Mismatch { cert: String, key: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

impl TlsError {
    /// The file at fault (for a mismatch, the key file), if any.
    pub fn file(&self) -> Option<&str> {
        match self {
            TlsError::Read { file, .. }
            | TlsError::TooLarge { file }
            | TlsError::Certificate { file, .. }
            | TlsError::Key { file, .. } => Some(file),
            TlsError::Mismatch { key, .. } => Some(key),
            TlsError::Config(_) => None,
        }
    }
}

/// The TLS settings of both ports: a port without a certificate source serves plaintext.
#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    /// The gRPC port's certificate (ALPN `h2`).
    pub grpc: Option<CertSource>,
    /// The HTTP port's certificate (ALPN `h2` and `http/1.1`).
    pub http: Option<CertSource>,
}

impl TlsConfig {
    /// Whether either port serves TLS.
    pub fn is_enabled(&self) -> bool {
        self.grpc.is_some() || self.http.is_some()
    }

    /// Reads every port's certificate and key files again (see `CertSource::reload`) and logs the
    /// outcome of each: info when the new pair is in use, an error naming the file when the old
    /// one stays. Returns whether every reload succeeded. Reads files: call it off the async
    /// runtime's worker threads (`spawn_blocking`).
    pub fn reload(&self) -> bool {
        let mut ok = true;
        for (port, source) in [("grpc", &self.grpc), ("http", &self.http)] {
            let Some(source) = source else { continue };
            let Some((cert, key)) = source.files() else {
                continue;
            };
            match source.reload() {
                Ok(changed) => tracing::info!(
                    port,
                    cert = %cert.display(),
                    key = %key.display(),
                    changed,
                    "TLS certificate reloaded"
                ),
                Err(e) => {
                    ok = false;
                    tracing::error!(
                        port,
                        file = e.file().unwrap_or_default(),
                        error = %e,
                        "TLS certificate reload failed; the previous certificate stays in use"
                    );
                }
            }
        }
        ok
    }
}

/// One port's certificate: where it comes from and the one new handshakes get. Clones share the
/// certificate (a reload through any clone is seen by all).
#[derive(Clone)]
pub struct CertSource {
    inner: Arc<Inner>,
}

struct Inner {
    origin: Origin,
    provider: Arc<CryptoProvider>,
    current: Arc<ArcSwap<CertifiedKey>>,
}

enum Origin {
    Files { cert: PathBuf, key: PathBuf },
    Memory,
}

impl fmt::Debug for CertSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner.origin {
            Origin::Files { cert, key } => f
                .debug_struct("CertSource")
                .field("cert", cert)
                .field("key", key)
                .finish(),
            Origin::Memory => f.write_str("CertSource(<in memory>)"),
        }
    }
}

impl CertSource {
    /// A certificate chain and private key in PEM files, read now (an error if either is missing,
    /// does not parse, or the key does not match the certificate) and again by `reload`.
    pub fn from_files(
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Result<CertSource, TlsError> {
        let (cert, key) = (cert.into(), key.into());
        let provider = provider();
        let loaded = load_files(&cert, &key, &provider)?;
        Ok(CertSource::with(
            Origin::Files { cert, key },
            provider,
            loaded,
        ))
    }

    /// A certificate chain and private key held in memory; `reload` keeps them.
    pub fn from_pem(pem: &TlsPem) -> Result<CertSource, TlsError> {
        let provider = provider();
        let loaded = certified_key(
            &pem.cert,
            "the PEM certificate",
            &pem.key,
            "the PEM private key",
            &provider,
        )?;
        Ok(CertSource::with(Origin::Memory, provider, loaded))
    }

    fn with(origin: Origin, provider: Arc<CryptoProvider>, loaded: CertifiedKey) -> CertSource {
        CertSource {
            inner: Arc::new(Inner {
                origin,
                provider,
                current: Arc::new(ArcSwap::from_pointee(loaded)),
            }),
        }
    }

    /// The certificate and key files, unless the source is in memory.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        match &self.inner.origin {
            Origin::Files { cert, key } => Some((cert, key)),
            Origin::Memory => None,
        }
    }

    /// Reads the files again and, if both parse and the key matches the certificate, serves the
    /// new pair to every handshake from now on; on an error the certificate in use stays.
    /// Returns whether the certificate chain differs from the one served before. A source in
    /// memory has nothing to read: `Ok(false)`.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let Origin::Files { cert, key } = &self.inner.origin else {
            return Ok(false);
        };
        let loaded = Arc::new(load_files(cert, key, &self.inner.provider)?);
        let previous = self.inner.current.swap(Arc::clone(&loaded));
        Ok(previous.cert != loaded.cert)
    }

    /// The end-entity certificate served now (DER).
    pub fn certificate_der(&self) -> Vec<u8> {
        self.inner
            .current
            .load()
            .cert
            .first()
            .map(|c| c.as_ref().to_vec())
            .unwrap_or_default()
    }

    /// A TLS acceptor offering `alpn`, whose handshakes present the certificate in use.
    pub(crate) fn acceptor(&self, alpn: &[&[u8]]) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
        let resolver = Resolver(Arc::clone(&self.inner.current));
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::clone(&self.inner.provider))
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Config(e.to_string()))?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

/// Hands each handshake the certificate in use.
#[derive(Debug)]
struct Resolver(Arc<ArcSwap<CertifiedKey>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_files(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let cert_name = cert.display().to_string();
    let key_name = key.display().to_string();
    let cert_pem = read_pem(cert, &cert_name)?;
    let key_pem = read_pem(key, &key_name)?;
    certified_key(&cert_pem, &cert_name, &key_pem, &key_name, provider)
}

fn read_pem(path: &Path, name: &str) -> Result<Vec<u8>, TlsError> {
    let read = |error| TlsError::Read {
        file: name.to_owned(),
        error,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge {
            file: name.to_owned(),
        });
    }
    Ok(bytes)
}

/// The certificate chain of `cert_pem` with the private key of `key_pem`, checked to match.
fn certified_key(
    cert_pem: &[u8],
    cert_name: &str,
    key_pem: &[u8],
    key_name: &str,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let bad_cert = |reason: String| TlsError::Certificate {
        file: cert_name.to_owned(),
        reason,
    };
    let bad_key = |reason: String| TlsError::Key {
        file: key_name.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_cert(pem_problem(&e, "certificate")))?;
    if chain.is_empty() {
        return Err(bad_cert(
            "no PEM certificate (BEGIN CERTIFICATE) found".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| bad_key(pem_problem(&e, "private key")))?;
    // rustls's messages name the key's kind or algorithm, never its bytes.
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| bad_key(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        // A key that cannot tell its public key is taken as is (rustls does the same).
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::Mismatch {
            cert: cert_name.to_owned(),
            key: key_name.to_owned(),
        }),
        Err(e) => Err(bad_cert(e.to_string())),
    }
}

/// What is wrong with a PEM file, without quoting it (pki-types' messages quote the line at
/// fault, which could be part of a key).
fn pem_problem(e: &rustls_pki_types::pem::Error, kind: &str) -> String {
    use rustls_pki_types::pem::Error as E;
    match e {
        E::NoItemsFound => format!("no PEM {kind} found"),
        E::MissingSectionEnd { .. } => "a PEM section has no END line".into(),
        E::IllegalSectionStart { .. } => "a malformed PEM BEGIN line".into(),
        E::Base64Decode(_) => "a PEM section is not valid base64".into(),
        E::Io(io) => format!("read error: {io}"),
        E::SectionTooLarge => "a PEM section is too large".into(),
        _ => "not valid PEM".into(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    struct Pair {
        cert: String,
        key: String,
        der: Vec<u8>,
    }

    fn pair(name: &str) -> Pair {
        let generated = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        Pair {
            cert: generated.cert.pem(),
            key: generated.signing_key.serialize_pem(),
            der: generated.cert.der().to_vec(),
        }
    }

    fn write(dir: &Path, pair: &Pair) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &pair.cert).unwrap();
        std::fs::write(&key, &pair.key).unwrap();
        (cert, key)
    }

    fn resolved(source: &CertSource) -> Vec<u8> {
        Resolver(Arc::clone(&source.inner.current))
            .0
            .load_full()
            .cert
            .first()
            .unwrap()
            .as_ref()
            .to_vec()
    }

    #[test]
    fn reload_swaps_in_a_good_pair_and_keeps_the_old_one_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (pair("a.test"), pair("b.test"));
        let (cert, key) = write(dir.path(), &a);
        let source = CertSource::from_files(&cert, &key).unwrap();
        assert_eq!(source.certificate_der(), a.der);
        assert!(
            !source.reload().unwrap(),
            "the same pair again changes nothing"
        );

        write(dir.path(), &b);
        assert!(source.reload().unwrap());
        assert_eq!(source.certificate_der(), b.der);
        assert_eq!(resolved(&source), b.der);

        // A certificate that does not parse: its file is named, B stays.
        std::fs::write(&cert, "not a certificate\n").unwrap();
        let e = source.reload().unwrap_err();
        assert!(matches!(e, TlsError::Certificate { .. }), "{e}");
        assert_eq!(e.file(), Some(cert.display().to_string().as_str()));
        assert_eq!(source.certificate_der(), b.der);

        // A missing key.
        std::fs::write(&cert, &b.cert).unwrap();
        std::fs::remove_file(&key).unwrap();
        let e = source.reload().unwrap_err();
        assert!(matches!(e, TlsError::Read { .. }), "{e}");
        assert_eq!(e.file(), Some(key.display().to_string().as_str()));

        // Half-replaced: A's key with B's certificate.
        std::fs::write(&key, &a.key).unwrap();
        let e = source.reload().unwrap_err();
        assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");
        assert_eq!(source.certificate_der(), b.der);
    }

    #[test]
    fn errors_never_quote_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = pair("a.test");
        let (cert, key) = write(dir.path(), &a);
        // A key file with its BEGIN line damaged and a body that is not base64.
        let body: Vec<&str> = a.key.lines().skip(1).collect();
        let damaged = format!("-----BEGIN PRIVATE KEY\n{}\n", body.join("\n"));
        std::fs::write(&key, &damaged).unwrap();
        let e = CertSource::from_files(&cert, &key).unwrap_err();
        let shown = format!("{e} {e:?}");
        for line in &body {
            if line.len() > 8 && !line.starts_with("-----") {
                assert!(!shown.contains(line), "{shown}");
            }
        }
        assert!(matches!(e, TlsError::Key { .. }), "{e}");
        let too_big = dir.path().join("big.pem");
        std::fs::write(&too_big, vec![b'A'; (MAX_PEM_BYTES + 1) as usize]).unwrap();
        assert!(matches!(
            CertSource::from_files(&too_big, &key),
            Err(TlsError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_source_in_memory_serves_its_pem_and_reloads_nothing() {
        let a = pair("a.test");
        let source = CertSource::from_pem(&TlsPem {
            cert: a.cert.into_bytes(),
            key: a.key.into_bytes(),
        })
        .unwrap();
        assert!(source.files().is_none());
        assert!(!source.reload().unwrap());
        assert_eq!(source.certificate_der(), a.der);
        assert!(source.acceptor(&[b"h2"]).is_ok());
        let config = TlsConfig {
            grpc: Some(source),
            http: None,
        };
        assert!(config.is_enabled() && config.reload());
    }
}
