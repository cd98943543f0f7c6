//! Shared helpers for the end-to-end tests.

use std::path::{Path, PathBuf};

/// The repository root (tests read `flags/` and `tests/` from it).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// The entries of a directory that pass `keep`, sorted by path (test order is stable).
pub fn sorted_entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| keep(p))
        .collect();
    paths.sort();
    paths
}

/// Parses YAML test data into JSON values.
pub fn yaml_to_json(text: &str) -> serde_json::Value {
    // YAML 1.2 booleans only, as Vexil reads flag files (`on` and `off` are text).
    let options = serde_saphyr::options! { strict_booleans: true };
    serde_saphyr::from_str_with_options::<serde_json::Value>(text, options)
        .expect("test data is valid YAML")
}

/// The embedded example repository, compiled once.
pub fn example_snapshot() -> &'static vexil_core::Snapshot {
    static SNAPSHOT: std::sync::LazyLock<vexil_core::Snapshot> =
        std::sync::LazyLock::new(compile_example);
    &SNAPSHOT
}

fn compile_example() -> vexil_core::Snapshot {
    let (_, compiled) = vexil_core::load_dir(
        &repo_root().join("flags"),
        &vexil_core::CompileOptions::default(),
    )
    .expect("flags/ readable");
    assert!(
        compiled.diagnostics.is_empty(),
        "flags/ has diagnostics: {:#?}",
        compiled.diagnostics
    );
    compiled.snapshot.expect("flags/ compiles")
}

/// `vexil serve` options putting every port on a free loopback port (tests run in parallel:
/// no fixed port, not even the sync service's default 8015).
pub const LOOPBACK_PORTS: [&str; 6] = [
    "--grpc-addr",
    "127.0.0.1:0",
    "--http-addr",
    "127.0.0.1:0",
    "--sync-addr",
    "127.0.0.1:0",
];

/// Polls `check` every 10 ms until it holds; fails naming `what` after `patience`.
pub async fn poll_until<F, Fut>(what: &str, patience: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(start.elapsed() < patience, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Compares `actual` with the golden file at `relative` (from the repository root), or
/// rewrites it with VEXIL_BLESS=1 (after a reviewed change).
pub fn golden(relative: &str, actual: &str) {
    let path = repo_root().join(relative);
    if std::env::var_os("VEXIL_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (VEXIL_BLESS=1 writes it)", path.display()));
    assert_eq!(
        actual, expected,
        "{relative} differs (VEXIL_BLESS=1 rewrites it after review)"
    );
}

/// Runs the `vexil` binary from the repository root.
pub fn vexil(args: &[&str]) -> std::process::Output {
    vexil_in(&repo_root(), args)
}

/// Runs the `vexil` binary in `dir`.
pub fn vexil_in(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_vexil"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run vexil")
}

/// One HTTP/1.1 request over a fresh loopback connection: (status, head, body).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("receive");
    let code = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (code, head.to_owned(), body.to_owned())
}

/// Runs git in `dir` with a fixed identity and no user or system configuration; returns stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .args(["-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Vexil Test")
        .env("GIT_AUTHOR_EMAIL", "test@vexil.invalid")
        .env("GIT_COMMITTER_NAME", "Vexil Test")
        .env("GIT_COMMITTER_EMAIL", "test@vexil.invalid")
        .output()
        .expect("run git");
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("git prints UTF-8")
}
