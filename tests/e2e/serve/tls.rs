//! TLS on both ports. In process: gRPC with a certificate held in memory. The binary, with
//! certificate files issued by a test CA: OFREP over HTTPS on the HTTP port (HTTP/1.1 and HTTP/2
//! by ALPN), plaintext refused there, the handshake timeout, the options' contract, and both
//! ports' certificates reread on SIGHUP (new handshakes only; a missing or broken file keeps the
//! certificate in use and is named in the log). Waits are bounded polls for a state.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use vexil_server::{CertSource, TlsConfig};

use super::*;
use crate::faults::Server;

/// A certificate authority made for the test.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

/// A certificate for `localhost` issued by the test CA, and its key.
struct Leaf {
    cert: String,
    key: String,
    der: Vec<u8>,
}

impl Ca {
    fn new() -> Ca {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose};
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Vexil test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: rcgen::Issuer::new(params, key),
            pem,
        }
    }

    fn issue(&self, name: &str) -> Leaf {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose};
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A client that trusts only this CA, offers `alpn` and never resumes a session (every
    /// handshake sees the certificate the server presents now).
    fn client(&self, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.resumption = rustls::client::Resumption::disabled();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

impl Leaf {
    fn write(&self, cert: &Path, key: &Path) {
        std::fs::write(cert, &self.cert).unwrap();
        std::fs::write(key, &self.key).unwrap();
    }
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection to `addr` as `localhost`, offering `alpn`.
async fn connect(addr: SocketAddr, ca: &Ca, alpn: &[&[u8]]) -> std::io::Result<Tls> {
    let handshake = async {
        let tcp = TcpStream::connect(addr).await?;
        ca.client(alpn)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    };
    tokio::time::timeout(PATIENCE, handshake)
        .await
        .unwrap_or_else(|_| panic!("no TLS handshake with {addr} within {PATIENCE:?}"))
}

/// The end-entity certificate a connection was handshaken with (DER).
fn peer(tls: &Tls) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

/// The certificate a new handshake with `addr` presents.
async fn presented(addr: SocketAddr, ca: &Ca, alpn: &[&[u8]]) -> Vec<u8> {
    peer(&connect(addr, ca, alpn).await.unwrap())
}

/// One HTTP/1.1 request over a new TLS connection (ALPN `http/1.1`): (status, body).
async fn https1(
    addr: SocketAddr,
    ca: &Ca,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut tls = connect(addr, ca, &[b"http/1.1"]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    // Whatever arrived before the close counts (with or without a close_notify).
    let _ = tokio::time::timeout(PATIENCE, tls.read_to_end(&mut response))
        .await
        .expect("the answer within PATIENCE");
    let response = String::from_utf8(response).unwrap();
    let code = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (code, body.to_owned())
}

/// An HTTP/2 connection over TLS (ALPN `h2`).
async fn h2_client(addr: SocketAddr, ca: &Ca) -> (h2::client::SendRequest<bytes::Bytes>, Vec<u8>) {
    let tls = connect(addr, ca, &[b"h2"]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let cert = peer(&tls);
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    (client, cert)
}

/// An OFREP evaluation of `flag` on an HTTP/2 connection: (status, body).
async fn h2_ofrep(
    client: &h2::client::SendRequest<bytes::Bytes>,
    flag: &str,
    token: &str,
) -> (u16, String) {
    let exchange = async {
        let mut client = client.clone().ready().await.unwrap();
        let mut request =
            http::Request::post(format!("https://localhost/ofrep/v1/evaluate/flags/{flag}"))
                .header("content-type", "application/json");
        if !token.is_empty() {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request.body(()).unwrap();
        let (response, mut send) = client.send_request(request, false).unwrap();
        send.send_data(
            bytes::Bytes::from_static(br#"{"context":{"targetingKey":"u1"}}"#),
            true,
        )
        .unwrap();
        let response = response.await.unwrap();
        let code = response.status().as_u16();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        (code, String::from_utf8(bytes).unwrap())
    };
    tokio::time::timeout(PATIENCE, exchange)
        .await
        .expect("an HTTP/2 answer within PATIENCE")
}

/// A gRPC channel over TLS to `addr`, trusting `ca_pem` for `localhost`.
async fn tls_channel(addr: SocketAddr, ca_pem: &str) -> Channel {
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A flags directory whose flag `a` is `value`.
fn flags_dir(root: &Path, value: &str) -> PathBuf {
    let dir = root.join("flags");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.yaml"), flags_yaml(value)).unwrap();
    dir
}

/// OFREP over HTTPS on the HTTP port, by HTTP/1.1 and HTTP/2 (ALPN), with a token; plaintext
/// HTTP on that port gets no answer; a client that never handshakes is cut off by the header
/// read timeout (counted as a handshake timeout); the gRPC port, without TLS options, stays
/// plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_port_serves_https() {
    let tmp = tempfile::tempdir().unwrap();
    let flags = flags_dir(tmp.path(), "over-tls");
    let ca = Ca::new();
    let (cert, key) = (tmp.path().join("http.crt"), tmp.path().join("http.key"));
    let leaf = ca.issue("http");
    leaf.write(&cert, &key);
    let server = Server::start(
        &[
            flags.to_str().unwrap(),
            "--http-tls-cert",
            cert.to_str().unwrap(),
            "--http-tls-key",
            key.to_str().unwrap(),
            "--header-read-timeout",
            "1s",
        ],
        &[("VEXIL_TOKENS", "k1")],
    )
    .await;
    let http = server.http;
    assert_eq!(presented(http, &ca, &[b"http/1.1"]).await, leaf.der);

    let context = r#"{"context":{"targetingKey":"u1"}}"#;
    let path = "/ofrep/v1/evaluate/flags/a";
    let (code, body) = https1(http, &ca, "POST", path, &[], context).await;
    assert_eq!(code, 401, "{body}");
    let auth = [("Authorization", "Bearer k1")];
    let (code, body) = https1(http, &ca, "POST", path, &auth, context).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""key":"a","value":"over-tls""#), "{body}");
    assert_eq!(https1(http, &ca, "GET", "/readyz", &[], "").await.0, 200);

    let (h2, _) = h2_client(http, &ca).await;
    let (code, body) = h2_ofrep(&h2, "a", "k1").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""value":"over-tls""#), "{body}");

    // Plaintext HTTP to the TLS port: no HTTP answer, the connection is closed.
    let mut plain = TcpStream::connect(http).await.unwrap();
    plain
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, plain.read_to_end(&mut answer))
        .await
        .expect("the plaintext connection is closed");
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");

    // A client that connects and never sends a ClientHello is closed after the timeout.
    let mut silent = TcpStream::connect(http).await.unwrap();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(PATIENCE, silent.read(&mut buf))
        .await
        .expect("a silent client is cut off by the header read timeout");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    let (code, metrics) = https1(http, &ca, "GET", "/metrics", &auth, "").await;
    assert_eq!(code, 200);
    let timeouts: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"vexil_connections_closed_total{reason="handshake_timeout"} "#)
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no handshake timeout count in:\n{metrics}"));
    assert!(timeouts >= 1, "{metrics}");

    // The gRPC port has no TLS options: plaintext, with the token.
    let mut client = FlagServiceClient::new(
        Channel::from_shared(format!("http://{}", server.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let mut request = tonic::Request::new(eval_request("a"));
    request
        .metadata_mut()
        .insert("authorization", "Bearer k1".parse().unwrap());
    let answer = client.evaluate(request).await.unwrap().into_inner();
    assert_eq!(
        answer.value.unwrap().kind,
        Some(proto::value::Kind::StringValue("over-tls".into()))
    );
}

/// SIGHUP rereads both ports' certificate files: new handshakes get the new certificate, an
/// open connection goes on; a missing key or a broken certificate keeps the certificate in use
/// and is logged with the file's name (and none of its contents).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_both_ports_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let flags = flags_dir(tmp.path(), "reloaded");
    let ca = Ca::new();
    let file = |name: &str| tmp.path().join(name);
    let (grpc_cert, grpc_key) = (file("grpc.crt"), file("grpc.key"));
    let (http_cert, http_key) = (file("http.crt"), file("http.key"));
    let (grpc_a, http_a) = (ca.issue("grpc A"), ca.issue("http A"));
    let (grpc_b, http_b) = (ca.issue("grpc B"), ca.issue("http B"));
    grpc_a.write(&grpc_cert, &grpc_key);
    http_a.write(&http_cert, &http_key);
    let server = Server::start(
        &[
            flags.to_str().unwrap(),
            "--rescan-interval",
            "1h",
            "--tls-cert",
            grpc_cert.to_str().unwrap(),
            "--tls-key",
            grpc_key.to_str().unwrap(),
        ],
        // The HTTP port's files through the variables (the options' twins).
        &[
            ("VEXIL_HTTP_TLS_CERT", http_cert.to_str().unwrap()),
            ("VEXIL_HTTP_TLS_KEY", http_key.to_str().unwrap()),
            ("VEXIL_LOG", "info"),
        ],
    )
    .await;
    let (grpc, http) = (server.grpc, server.http);
    assert_eq!(presented(grpc, &ca, &[b"h2"]).await, grpc_a.der);
    assert_eq!(presented(http, &ca, &[b"http/1.1"]).await, http_a.der);
    // Opened before the reload; it must go on serving with the certificate it got.
    let (open, open_cert) = h2_client(http, &ca).await;
    assert_eq!(open_cert, http_a.der);
    assert_eq!(h2_ofrep(&open, "a", "").await.0, 200);

    grpc_b.write(&grpc_cert, &grpc_key);
    http_b.write(&http_cert, &http_key);
    server.hup();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = (
            presented(grpc, &ca, &[b"h2"]).await,
            presented(http, &ca, &[b"h2", b"http/1.1"]).await,
        );
        if now == (grpc_b.der.clone(), http_b.der.clone()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not bring certificate B within {PATIENCE:?}; stderr:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, body) = h2_ofrep(&open, "a", "").await;
    assert_eq!(
        code, 200,
        "the connection opened before the reload goes on: {body}"
    );
    assert!(body.contains(r#""value":"reloaded""#), "{body}");
    // A gRPC call over the new certificate.
    let channel = tls_channel(grpc, &ca.pem).await;
    assert_eq!(
        eval_a(&mut FlagServiceClient::new(channel)).await,
        "reloaded"
    );
    let log = server.log();
    assert!(
        log.matches("TLS certificate reloaded").count() >= 2,
        "an info line per port:\n{log}"
    );

    // Broken files: a certificate that is not PEM (HTTP), a key that is gone (gRPC).
    std::fs::write(&http_cert, "not a certificate\n").unwrap();
    std::fs::remove_file(&grpc_key).unwrap();
    server.hup();
    let named = |log: &str| {
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains(http_cert.to_str().unwrap()))
            && log
                .lines()
                .any(|l| l.contains("ERROR") && l.contains(grpc_key.to_str().unwrap()))
    };
    let deadline = Instant::now() + PATIENCE;
    while !named(&server.log()) {
        assert!(
            Instant::now() < deadline,
            "no error naming {} and {} within {PATIENCE:?}; stderr:\n{}",
            http_cert.display(),
            grpc_key.display(),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(presented(grpc, &ca, &[b"h2"]).await, grpc_b.der);
    assert_eq!(presented(http, &ca, &[b"http/1.1"]).await, http_b.der);
    let (code, _) = https1(http, &ca, "GET", "/readyz", &[], "").await;
    assert_eq!(code, 200);
    // No key material in the log.
    let log = server.log();
    for leaf in [&grpc_a, &grpc_b, &http_a, &http_b] {
        for line in leaf.key.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!log.contains(line), "key material in the log:\n{log}");
        }
    }
}

/// The options' contract: each TLS option needs its twin, and an unreadable file stops the
/// start with its name.
#[test]
fn tls_options_need_each_other_and_readable_files() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.crt");
    let serve = |args: &[&str], env: &[(&str, &str)]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_vexil"))
            .arg("serve")
            .args(crate::helpers::LOOPBACK_PORTS)
            .args(args)
            .envs(env.iter().copied())
            .current_dir(tmp.path())
            .output()
            .unwrap()
    };
    for (alone, twin) in [
        ("--http-tls-cert", "--http-tls-key"),
        ("--http-tls-key", "--http-tls-cert"),
        ("--tls-cert", "--tls-key"),
    ] {
        let out = serve(&[alone, missing.to_str().unwrap()], &[]);
        assert_eq!(out.status.code(), Some(2), "{alone}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(twin), "{alone}: {stderr}");
    }
    let out = serve(
        &[],
        &[
            ("VEXIL_HTTP_TLS_CERT", missing.to_str().unwrap()),
            ("VEXIL_HTTP_TLS_KEY", missing.to_str().unwrap()),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("HTTP port over TLS") && stderr.contains(missing.to_str().unwrap()),
        "{stderr}"
    );
}

/// gRPC over TLS with a certificate held in memory; plaintext is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_only_tls_clients() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = cert.cert.pem();
    let key_pem = cert.signing_key.serialize_pem();
    let repo = repo_with(&flags_yaml("secure"));
    let state = AppState::new(
        git_reloader(repo.path(), false).unwrap(),
        Options::default(),
    );
    let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = grpc_listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let source = CertSource::from_pem(&vexil_server::TlsPem {
        cert: cert_pem.clone().into_bytes(),
        key: key_pem.into_bytes(),
    })
    .unwrap();
    let server = tokio::spawn(vexil_server::serve(
        state,
        Tokens::default(),
        TlsConfig {
            grpc: Some(source),
            http: None,
        },
        grpc_listener,
        http_listener,
        async move {
            let _ = stopped.await;
        },
    ));
    let mut client = FlagServiceClient::new(tls_channel(grpc, &cert_pem).await);
    assert_eq!(eval_a(&mut client).await, "secure");

    // A plaintext gRPC client: TCP and the HTTP/2 preface need no answer, so the channel
    // connects, but the call must fail in the transport, with no gRPC status from the server:
    // the port answers the preface with a TLS alert and closes, so the client reads an
    // oversized HTTP/2 frame (INTERNAL) or finds the connection gone before its request went
    // out (CANCELLED, UNAVAILABLE).
    let plain = Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .expect("a plaintext channel connects (nothing is read back before the first call)");
    let call = FlagServiceClient::new(plain)
        .evaluate(eval_request("a"))
        .await;
    let err = call.expect_err("a plaintext call to the TLS port must fail");
    let transport = std::error::Error::source(&err)
        .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some());
    assert!(
        transport
            && matches!(
                err.code(),
                Code::Internal | Code::Cancelled | Code::Unavailable | Code::Unknown
            ),
        "a transport failure, not a status of the service: {err:?}"
    );
    // What the port sends to any plaintext bytes: a fatal TLS alert record, then it closes.
    {
        let mut tcp = tokio::net::TcpStream::connect(grpc).await.unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        // Everything until the close (a reset after the alert, if the server left bytes unread).
        let mut answer = Vec::new();
        tokio::time::timeout(PATIENCE, async {
            let mut buf = [0u8; 1024];
            while let Ok(n @ 1..) = tcp.read(&mut buf).await {
                answer.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .expect("the TLS port closes a plaintext connection");
        // Record type 21 (alert), protocol version 3.x, length 2, level 2 (fatal).
        assert!(
            matches!(answer.as_slice(), [21, 3, _, 0, 2, 2, _]),
            "a fatal TLS alert, not an HTTP answer: {answer:?} ({:?})",
            String::from_utf8_lossy(&answer)
        );
    }
    // The TLS client still works after the plaintext attempts.
    assert_eq!(eval_a(&mut client).await, "secure");
    let _ = stop.send(());
    tokio::time::timeout(PATIENCE, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
