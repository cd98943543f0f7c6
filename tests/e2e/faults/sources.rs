//! Sources that misbehave: a silent git server, a read that hangs while serving, a damaged pack,
//! deep and oddly named files, a Status with 20,000 diagnostics.

use super::*;

/// A git:// server on 127.0.0.1: `git daemon --inetd` on each connection for the repositories
/// under `base`, or, once silenced, a server that accepts and never writes.
struct GitServer {
    addr: SocketAddr,
    silent: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<std::net::TcpStream>>>,
    daemons: Arc<Mutex<Vec<std::process::Child>>>,
}

impl GitServer {
    fn start(base: Option<&Path>) -> GitServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = GitServer {
            addr: listener.local_addr().unwrap(),
            silent: Arc::new(AtomicBool::new(base.is_none())),
            stop: Arc::new(AtomicBool::new(false)),
            held: Arc::default(),
            daemons: Arc::default(),
        };
        let (silent, stop, held, daemons) = (
            Arc::clone(&server.silent),
            Arc::clone(&server.stop),
            Arc::clone(&server.held),
            Arc::clone(&server.daemons),
        );
        let base = base.map(Path::to_path_buf);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                match (&base, silent.load(Ordering::SeqCst)) {
                    (Some(base), false) => {
                        let input = std::os::fd::OwnedFd::from(conn.try_clone().unwrap());
                        let output = std::os::fd::OwnedFd::from(conn);
                        let daemon = std::process::Command::new("git")
                            .args(["daemon", "--inetd", "--export-all"])
                            .arg(format!("--base-path={}", base.display()))
                            .arg(base)
                            .stdin(input)
                            .stdout(output)
                            .stderr(std::process::Stdio::null())
                            .spawn()
                            .unwrap();
                        daemons.lock().unwrap().push(daemon);
                    }
                    _ => held.lock().unwrap().push(conn),
                }
            }
        });
        server
    }

    fn url(&self) -> String {
        format!("git://{}/flags.git", self.addr)
    }

    fn silence(&self) {
        self.silent.store(true, Ordering::SeqCst);
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees `stop`.
        let _ = std::net::TcpStream::connect(self.addr);
        for mut daemon in self.daemons.lock().unwrap().drain(..) {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
    }
}

fn names_a_timeout(text: &str) -> bool {
    let text = text.to_lowercase();
    text.contains("timed out") || text.contains("timeout")
}

/// Before the fix a git:// server that accepts and never answers blocked start-up for good,
/// even with `--start-empty` (the first read came before the ports were bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_git_server_is_a_timeout_not_a_hang() {
    let git_server = GitServer::start(None);
    let url = git_server.url();
    let caches = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let cache = |i: usize| caches[i].path().to_str().unwrap();
    let short = [
        ("VEXIL_GIT_TIMEOUT", "2s"),
        ("VEXIL_GIT_CONNECT_TIMEOUT", "2s"),
    ];

    // With --start-empty the server answers while the first read hangs (a timeout far beyond
    // the wait: the read is still running) ...
    let hanging = async {
        let server = Process::spawn(
            &[&url, "--start-empty", "--cache-dir", cache(0)],
            &[("VEXIL_GIT_TIMEOUT", "300s")],
            None,
        )
        .serving()
        .await
        .map_err(|e| format!("with --start-empty, while the first read hangs: {e}"))?;
        match server.get("/readyz").await {
            Some((503, _)) => Ok(()),
            other => Err(format!("/readyz while the first read hangs: {other:?}")),
        }
    };
    // ... and reports the timeout once it passes ...
    let timing_out = async {
        let server = Process::spawn(
            &[&url, "--start-empty", "--cache-dir", cache(1)],
            &short,
            None,
        )
        .serving()
        .await
        .map_err(|e| format!("with --start-empty and --git-timeout 2s: {e}"))?;
        let named = poll(PATIENCE, || async {
            let error = server.status().await.ok()?.last_error?;
            names_a_timeout(&error.message).then_some(())
        })
        .await;
        named.ok_or_else(|| {
            format!("Status named no timeout within {PATIENCE:?} (--git-timeout 2s)")
        })
    };
    // ... and without it start-up fails, naming the timeout.
    let strict = async {
        let process = Process::spawn(&[&url, "--cache-dir", cache(2)], &short, None);
        let (status, log) = process
            .exited(PATIENCE)
            .await
            .map_err(|e| format!("without --start-empty (--git-timeout 2s): {e}"))?;
        if !status.success() && names_a_timeout(&log) {
            Ok(())
        } else {
            Err(format!("without --start-empty: {status}, stderr:\n{log}"))
        }
    };
    let (hanging, timing_out, strict) = tokio::join!(hanging, timing_out, strict);
    let mut verdicts = Verdicts::default();
    for result in [hanging, timing_out, strict] {
        verdicts.check_result(result);
    }
    verdicts.finish();
}

/// Before the fix a read that hung while serving was invisible (ready, Status SWAPPED) and
/// every abandoned Reload call kept a blocking thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_hangs_while_serving_shows_and_pins_no_threads() {
    let base = tempfile::tempdir().unwrap();
    let repo = base.path().join("flags.git");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    write_a(&repo, "one");
    commit_all(&repo, "one");
    let git_server = GitServer::start(Some(base.path()));
    let cache = tempfile::tempdir().unwrap();
    let server = Server::start(
        &[
            &git_server.url(),
            "--cache-dir",
            cache.path().to_str().unwrap(),
            "--fetch-interval",
            "500ms",
        ],
        &[
            ("VEXIL_GIT_TIMEOUT", "120s"),
            ("VEXIL_READ_STALL_TIMEOUT", "2s"),
        ],
    )
    .await;
    assert_eq!(server.get("/readyz").await.map(|r| r.0), Some(200));
    git_server.silence();
    let mut verdicts = Verdicts::default();

    let readyz = poll(PATIENCE, || async {
        server.get("/readyz").await.filter(|(code, _)| *code == 503)
    })
    .await;
    verdicts.check(readyz.is_some(), || {
        format!("/readyz still 200 {PATIENCE:?} after the source hung (read stall timeout 2 s)")
    });
    if let Some((_, body)) = &readyz {
        verdicts.check(body.trim().len() > "not ready".len(), || {
            format!("/readyz gave no reason: {body:?}")
        });
        let metrics = server
            .get("/metrics")
            .await
            .map(|r| r.1)
            .unwrap_or_default();
        verdicts.check(metrics.contains("vexil_reloader_healthy 0"), || {
            "no `vexil_reloader_healthy 0` in /metrics".into()
        });
        // Health follows (it is re-checked every second or so).
        let not_serving = poll(PATIENCE, || async {
            let mut health =
                tonic_health::pb::health_client::HealthClient::new(channel(server.grpc).await);
            let status = health
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .ok()?
                .into_inner()
                .status;
            (status == tonic_health::pb::health_check_response::ServingStatus::NotServing as i32)
                .then_some(())
        })
        .await;
        verdicts.check(not_serving.is_some(), || {
            format!("health stayed SERVING {PATIENCE:?} after /readyz turned 503")
        });
    }

    let threads = proc_status(server.pid(), "Threads");
    let mut client = server.client().await;
    for _ in 0..50 {
        let mut request = tonic::Request::new(proto::ReloadRequest {});
        request.set_timeout(Duration::from_millis(100));
        let _ = client.reload(request).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = proc_status(server.pid(), "Threads");
    verdicts.check(after <= threads + 4, || {
        format!("50 abandoned Reload calls took the server from {threads} to {after} threads")
    });
    verdicts.finish();
}

// ---------------------------------------------------------------------------------------------
// 5. A damaged pack
// ---------------------------------------------------------------------------------------------

/// Before the fix a damaged pack made git2 panic in the reloader thread (`Odb::read_header`
/// unwraps the object type), which ended reloading for good with Status unchanged.
///
/// A pack cut short is rejected by libgit2 as a whole ("does not match index"), an ordinary
/// source error; this pack keeps its size, header and trailer but has its objects zeroed, so
/// libgit2 reads an object header of type 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_pack_is_a_source_error_and_reloading_goes_on() {
    let repo = tempfile::tempdir().unwrap();
    let root = repo.path();
    git(root, &["init", "-q", "-b", "main"]);
    std::fs::create_dir_all(root.join("flags")).unwrap();
    for i in 0..5 {
        std::fs::write(
            root.join(format!("flags/f{i}.yaml")),
            flags_file([format!("f{i}")], 0),
        )
        .unwrap();
    }
    let first = commit_all(root, "one");
    git(root, &["repack", "-adq"]);
    let server = Server::on_main(root, &[]).await;
    assert!(served(&server, &first, PATIENCE).await);

    // The next commit (loose objects) changes f0; f1..f4 stay in the pack. It is made on a side
    // ref, the pack is damaged in place, then `main` is pointed at it.
    std::fs::write(root.join("flags/f0.yaml"), flags_file(["f0".to_owned()], 1)).unwrap();
    git(root, &["add", "-A"]);
    let tree = git(root, &["write-tree"]).trim().to_owned();
    let second = git(root, &["commit-tree", &tree, "-p", "HEAD", "-m", "two"])
        .trim()
        .to_owned();
    let packs = crate::helpers::sorted_entries(&root.join(".git/objects/pack"), |p| {
        p.extension() == Some(OsStr::new("pack"))
    });
    let [pack] = packs.as_slice() else {
        panic!("one pack expected: {packs:?}")
    };
    let original = std::fs::read(pack).unwrap();
    let mut permissions = std::fs::metadata(pack).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    permissions.set_readonly(false);
    std::fs::set_permissions(pack, permissions).unwrap();
    let mut damaged = original.clone();
    let len = damaged.len();
    damaged[12..len - 20].fill(0);
    // In place (same file, not a rename): the server may have the pack mapped.
    {
        use std::io::{Seek as _, Write as _};
        let mut file = std::fs::OpenOptions::new().write(true).open(pack).unwrap();
        file.seek(std::io::SeekFrom::Start(0)).unwrap();
        file.write_all(&damaged).unwrap();
    }
    std::fs::write(root.join(".git/refs/heads/main"), format!("{second}\n")).unwrap();

    let mut verdicts = Verdicts::default();
    let failing = poll(Duration::from_secs(15), || async {
        let status = server.status().await.ok()?;
        (status.consecutive_failures > 0).then_some(status)
    })
    .await;
    if failing.is_none() {
        let status = status_text(&server).await;
        verdicts.fail(format!(
            "Status showed no failure within 15 s of the damaged read: {status}"
        ));
    }

    // Repaired, and a new commit on top: it is served.
    {
        use std::io::{Seek as _, Write as _};
        let mut file = std::fs::OpenOptions::new().write(true).open(pack).unwrap();
        file.seek(std::io::SeekFrom::Start(0)).unwrap();
        file.write_all(&original).unwrap();
    }
    std::fs::write(root.join("flags/f0.yaml"), flags_file(["f0".to_owned()], 2)).unwrap();
    let third = commit_all(root, "three");
    if !served(&server, &third, PATIENCE).await {
        let status = status_text(&server).await;
        verdicts.fail(format!(
            "the commit after the repair was not served within {PATIENCE:?}: {status}"
        ));
    }
    verdicts.finish();
}

/// Status in a line, for a failure message.
async fn status_text(server: &Server) -> String {
    match server.status().await {
        Ok(s) => format!(
            "revision {}, {} consecutive failures, {} attempts, last error {:?}",
            s.revision, s.consecutive_failures, s.attempts, s.last_error
        ),
        Err(e) => format!("Status failed: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Deep and oddly named files
// ---------------------------------------------------------------------------------------------

/// Under `root`: a valid `a.yaml`, a flag file 34 directories deep and one whose name is not
/// UTF-8.
fn odd_tree(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    write_a(root, "one");
    let deep = (0..34).fold(root.to_path_buf(), |p, i| p.join(format!("d{i}")));
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(
        deep.join("deep.yaml"),
        flags_file(["deep-flag".to_owned()], 0),
    )
    .unwrap();
    std::fs::write(
        root.join(OsStr::from_bytes(b"odd-\xff.yaml")),
        flags_file(["odd-flag".to_owned()], 0),
    )
    .unwrap();
}

/// Whether `text` names both files of `odd_tree` that are not read: the deep one by its path
/// or by the first directory on it that is too deep (`d0/.../d32`, 33 levels), the other by
/// its name (`odd-` and the replaced byte).
fn names_both(text: &str) -> bool {
    let too_deep = (0..=32)
        .map(|i| format!("d{i}"))
        .collect::<Vec<_>>()
        .join("/");
    text.contains(&too_deep) && text.contains("odd-")
}

fn validate(dir: &Path, args: &[&str]) -> Result<(), String> {
    let output = std::process::Command::new(vexil_bin())
        .arg("validate")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() && names_both(&text) {
        Ok(())
    } else {
        Err(format!(
            "vexil validate {args:?}: {}, output:\n{text}",
            output.status
        ))
    }
}

/// `vexil serve ARGS` either refuses to start, naming both files, or serves with Status naming
/// them.
async fn serve_reports_odd_files(args: &[&str]) -> Result<(), String> {
    match Process::spawn(args, &[], None).serving().await {
        Err(e) if names_both(&e) => Ok(()),
        Err(e) => Err(format!(
            "vexil serve {args:?} failed without naming both files: {e}"
        )),
        Ok(server) => {
            let status = server.status().await.map_err(|e| e.to_string())?;
            let shown = format!(
                "{:?} {:?} {:?}",
                status.warnings, status.last_attempt, status.last_error
            );
            if names_both(&shown) {
                Ok(())
            } else {
                Err(format!(
                    "vexil serve {args:?} served revision {} ({} flags) with no diagnostic naming d0/.../d32/d33/deep.yaml and odd-\\xff.yaml",
                    status.revision, status.flags
                ))
            }
        }
    }
}

/// Before the fix files more than 32 directories deep or with names that are not UTF-8 were
/// skipped without a word, and the revision served as valid without their flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_and_oddly_named_files_are_reported() {
    let mut verdicts = Verdicts::default();
    let dir = tempfile::tempdir().unwrap();
    odd_tree(dir.path());
    verdicts.check_result(validate(dir.path(), &["."]));
    verdicts.check_result(serve_reports_odd_files(&[dir.path().to_str().unwrap()]).await);

    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    odd_tree(&repo.path().join("flags"));
    commit_all(repo.path(), "odd files");
    // Only the committed tree counts: the working tree's flags are removed.
    std::fs::remove_dir_all(repo.path().join("flags")).unwrap();
    std::fs::create_dir(repo.path().join("flags")).unwrap();
    verdicts.check_result(validate(repo.path(), &["--rev", "main", "flags"]));
    verdicts.check_result(
        serve_reports_odd_files(&[
            repo.path().to_str().unwrap(),
            "--ref",
            "main",
            "--flags-dir",
            "flags",
        ])
        .await,
    );
    verdicts.finish();
}

// ---------------------------------------------------------------------------------------------
// 7. Status with tens of thousands of diagnostics
// ---------------------------------------------------------------------------------------------

/// Before the fix Status and Reload carried every diagnostic: 20,000 of them made an answer of
/// about 8 MiB, beyond a default gRPC client's 4 MiB, exactly when Status is needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_with_twenty_thousand_diagnostics_fits_a_default_client() {
    const FILES: usize = 200;
    const PER_FILE: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("broken/diagnostics-of-every-kind");
    std::fs::create_dir_all(&sub).unwrap();
    for f in 0..FILES {
        let mut text = String::from("flags:\n");
        for i in 0..PER_FILE {
            // One error each: an unknown field (with a suggestion).
            text.push_str(&format!(
                "  a-rather-long-flag-key-for-the-status-size-test-{f:03}-{i:03}:\n    descriptionn: broken on purpose\n    rules:\n      - when: [{{ attr: plan, equals: pro }}]\n        serve: true\n"
            ));
        }
        std::fs::write(sub.join(format!("file-{f:03}.yaml")), text).unwrap();
    }
    let output = std::process::Command::new(vexil_bin())
        .args(["validate", ".", "--format", "json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let total = listed.as_array().unwrap().len();
    assert_eq!(total, FILES * PER_FILE, "one diagnostic per broken flag");

    let server = Server::start(&[dir.path().to_str().unwrap(), "--start-empty"], &[]).await;
    // A default client: 4 MiB decoding limit.
    let client = server.client().await;
    let status = poll(PATIENCE, || {
        let mut client = client.clone();
        async move {
            match client.status(proto::StatusRequest {}).await {
                Ok(s) if s.get_ref().last_error.is_none() => None,
                other => Some(other.map(tonic::Response::into_inner)),
            }
        }
    })
    .await
    .expect("the first read ends within the wait");
    let mut verdicts = Verdicts::default();
    match status {
        Ok(status) => {
            for (which, attempt) in [
                ("last_attempt", &status.last_attempt),
                ("last_error", &status.last_error),
            ] {
                let attempt = attempt.clone().unwrap_or_default();
                verdicts.check(
                    attempt.result() == AttemptResult::Invalid
                        && attempt.diagnostics.len() <= 100
                        && attempt.diagnostics_total as usize == total,
                    || format!(
                        "Status {which}: {:?} with {} diagnostics, diagnostics_total {} (validate lists {total})",
                        attempt.result(),
                        attempt.diagnostics.len(),
                        attempt.diagnostics_total
                    ),
                );
            }
        }
        Err(e) => verdicts.fail(format!("Status with {total} diagnostics: {e}")),
    }
    match client.clone().reload(proto::ReloadRequest {}).await {
        Ok(reload) => {
            let attempt = reload.into_inner().attempt.unwrap_or_default();
            verdicts.check(attempt.diagnostics.len() <= 100, || {
                format!("Reload carried {} diagnostics", attempt.diagnostics.len())
            });
        }
        Err(e) => verdicts.fail(format!("Reload with {total} diagnostics: {e}")),
    }
    verdicts.finish();
}

// ---------------------------------------------------------------------------------------------
// 8, 9. Request bodies and contexts
// ---------------------------------------------------------------------------------------------
