//! The outbound HTTP client of the change notifications: one POST on a new connection (plain
//! TCP or rustls), hyper's HTTP/1 client driven in the caller's task, so that dropping the
//! future (the caller's timeout) closes the socket and leaves nothing running.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use http::{Request, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject as _;
use tokio::net::TcpStream;
use tokio_rustls::rustls;

/// Where a receiver is, taken apart once from its URL.
#[derive(Debug, Clone)]
pub struct Target {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// `host[:port]`, without any user part (the `Host` header).
    authority: String,
    path: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("not an http:// or https:// URL")]
    Scheme,
    #[error("the URL has no host")]
    NoHost,
    #[error("the URL cannot be parsed")]
    Parse,
}

impl Target {
    /// The URL's parts; errors never repeat the URL (it may hold credentials or a token).
    pub fn parse(url: &str) -> Result<Target, TargetError> {
        let uri: Uri = url.parse().map_err(|_| TargetError::Parse)?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(TargetError::Scheme),
        };
        let host = uri.host().ok_or(TargetError::NoHost)?.to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = match uri.port_u16() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let path = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        Ok(Target {
            https,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            authority,
            path,
        })
    }
}

/// What a receiver answered.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    /// `Retry-After` in seconds (Slack's 429), if given.
    pub retry_after: Option<Duration>,
    /// The start of the body, for the error text (Slack answers errors in plain text).
    pub text: String,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("invalid TLS server name")]
    ServerName,
    #[error("https receiver but no CA certificates loaded")]
    NoTls,
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("cannot build the request: {0}")]
    Request(#[from] http::Error),
    #[error("the connection closed before the answer")]
    Closed,
}

/// The CA certificates https receivers are checked against: `SSL_CERT_FILE`, else Debian's
/// bundle.
pub fn client_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    let path = std::env::var_os("SSL_CERT_FILE")
        .map_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into(), Into::into);
    let path: std::path::PathBuf = path;
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(&path)
        .map_err(|e| format!("cannot read CA certificates from {}: {e}", path.display()))?;
    for cert in certs.flatten() {
        // A certificate rustls cannot use is skipped, as every TLS client does with a bundle.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(format!("no CA certificate in {}", path.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// POSTs `body` to `target` on a new connection. No timeout here: the caller bounds the whole
/// exchange (connect, TLS, request, answer) and dropping this future closes the socket.
pub async fn post(
    target: &Target,
    tls: Option<&Arc<rustls::ClientConfig>>,
    headers: &[(&'static str, String)],
    body: Vec<u8>,
) -> Result<Answer, SendError> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(SendError::Connect)?;
    let _ = tcp.set_nodelay(true);
    let mut request = Request::post(target.path.as_str())
        .header(header::HOST, target.authority.as_str())
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("vexil/", env!("CARGO_PKG_VERSION")),
        )
        .header(header::CONNECTION, "close");
    for (name, value) in headers {
        request = request.header(*name, value.as_str());
    }
    let request = request.body(Body::from(body))?;
    if !target.https {
        return exchange(TokioIo::new(tcp), request).await;
    }
    let config = tls.ok_or(SendError::NoTls)?;
    let name = ServerName::try_from(target.host.clone()).map_err(|_| SendError::ServerName)?;
    let stream = tokio_rustls::TlsConnector::from(Arc::clone(config))
        .connect(name, tcp)
        .await
        .map_err(SendError::Tls)?;
    exchange(TokioIo::new(stream), request).await
}

async fn exchange<I>(io: I, request: Request<Body>) -> Result<Answer, SendError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    let answer = async {
        let response = sender.send_request(request).await?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // The answer's text helps the error line; a body larger than this is cut off.
        let bytes = axum::body::to_bytes(Body::new(response.into_body()), 4096)
            .await
            .unwrap_or_else(|_| Bytes::new());
        let text: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
        Ok::<_, SendError>(Answer {
            status,
            retry_after,
            text,
        })
    };
    // The connection is driven here, not in a spawned task: a receiver that hangs holds nothing
    // once the caller's timeout drops this future.
    tokio::pin!(answer);
    tokio::pin!(connection);
    tokio::select! {
        biased;
        answer = &mut answer => answer,
        closed = &mut connection => match closed {
            // The receiver closed after answering (`Connection: close`): the answer is in.
            Ok(()) => answer.await,
            Err(e) => Err(SendError::Http(e)),
        },
    }
}
