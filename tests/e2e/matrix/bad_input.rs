//! The matrix's second table: sources that cannot work. Each must stop `vexil serve` with an
//! error that names the problem (and, with `--start-empty`, serve and name it in `Status`, or
//! stop naming it), and no secret may show in either.

use super::servers::{Repo, Servers, free_port, ssh_keygen};
use super::*;

/// One source that cannot work: how it is given, and the words (any one, case-insensitive) its
/// error must hold.
struct Bad {
    name: &'static str,
    args: Vec<String>,
    env: Vec<(String, String)>,
    words: &'static [&'static str],
    secrets: Vec<String>,
    /// The cache directory, if the row is about it (else each run has a fresh one).
    cache: Option<PathBuf>,
}

/// The table, on the matrix's servers (a repository `bad` that they serve).
fn table(servers: &Servers, tmp: &Path) -> Vec<Bad> {
    let repo = Repo::new(&servers.base, "bad", &flags(1));
    drop(repo);
    let closed = free_port();
    let password = servers.password.to_owned();
    let wrong = "wrong-pw-Zz91".to_owned();
    let (ed25519, ed25519_lines) = {
        let (_, key) = &servers.ssh_keys[0];
        (key.display().to_string(), key_lines(key))
    };
    let (stranger, stranger_lines) = {
        let (key, _) = ssh_keygen(tmp, "ed25519", "not_authorized");
        (key.display().to_string(), key_lines(&key))
    };
    let not_a_dir = tmp.join("plain-file");
    std::fs::write(&not_a_dir, "not a directory\n").unwrap();
    let ca = servers.ca.file.display().to_string();
    let known = servers.known_hosts.display().to_string();
    let wrong_known = servers.wrong_known_hosts.display().to_string();
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let https_env = |password: &str, ca: Option<&str>| {
        let mut pairs = env(&[
            ("VEXIL_GIT_USERNAME", servers.user),
            ("VEXIL_GIT_PASSWORD", password),
        ]);
        if let Some(ca) = ca {
            pairs.extend(env(&[("VEXIL_GIT_CA_FILE", ca)]));
        }
        pairs
    };
    let unreachable: &[&str] = &["refused", "connect", "unreachable"];
    vec![
        Bad {
            name: "an unreachable git:// host",
            args: vec![format!("git://127.0.0.1:{closed}/bad.git")],
            env: vec![],
            words: unreachable,
            secrets: vec![],
            cache: None,
        },
        Bad {
            name: "an unreachable https:// host",
            args: vec![format!("https://127.0.0.1:{closed}/bad.git")],
            env: https_env(&password, Some(&ca)),
            words: unreachable,
            secrets: vec![password.clone()],
            cache: None,
        },
        Bad {
            name: "a wrong password",
            args: vec![servers.https_url("bad")],
            env: https_env(&wrong, Some(&ca)),
            words: &["authentication", "401", "credentials"],
            secrets: vec![password.clone(), wrong.clone()],
            cache: None,
        },
        Bad {
            name: "a wrong password in the URL",
            args: vec![servers.https_url("bad").replacen(
                "https://",
                &format!("https://{}:{wrong}@", servers.user),
                1,
            )],
            env: env(&[("VEXIL_GIT_CA_FILE", &ca)]),
            words: &["authentication", "401", "credentials"],
            secrets: vec![password.clone(), wrong.clone()],
            cache: None,
        },
        Bad {
            name: "a missing CA (no --git-ca-file for the private CA)",
            args: vec![servers.https_url("bad")],
            env: https_env(&password, None),
            words: &["certificate"],
            secrets: vec![password.clone()],
            cache: None,
        },
        Bad {
            name: "a wrong host key (known_hosts holds another key)",
            args: vec![servers.ssh_url("bad")],
            env: env(&[
                ("VEXIL_GIT_SSH_KEY", &ed25519),
                ("VEXIL_GIT_KNOWN_HOSTS", &wrong_known),
            ]),
            words: &["host key"],
            secrets: ed25519_lines.clone(),
            cache: None,
        },
        Bad {
            name: "an unknown host key (no VEXIL_GIT_KNOWN_HOSTS)",
            args: vec![servers.ssh_url("bad")],
            env: env(&[("VEXIL_GIT_SSH_KEY", &ed25519)]),
            words: &["known_hosts", "known hosts"],
            secrets: ed25519_lines,
            cache: None,
        },
        Bad {
            name: "an ssh key the server does not accept",
            args: vec![servers.ssh_url("bad")],
            env: env(&[
                ("VEXIL_GIT_SSH_KEY", &stranger),
                ("VEXIL_GIT_KNOWN_HOSTS", &known),
            ]),
            words: &["authentication"],
            secrets: stranger_lines,
            cache: None,
        },
        Bad {
            name: "a cache directory that is not writable (under a file)",
            args: vec![servers.file_url("bad")],
            env: vec![],
            words: &["cache"],
            secrets: vec![],
            // No "cache" in the path: the word must come from the message.
            cache: Some(not_a_dir.join("store")),
        },
    ]
}

/// `vexil serve` with `bad`'s source: it must exit unsuccessfully within the patience, its
/// stderr naming the problem without a secret.
async fn refused(bad: &Bad, cache: &Path, home: &Path) -> Named {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_vexil"));
    command
        .arg("serve")
        .args(crate::helpers::LOOPBACK_PORTS)
        .args(["--flags-dir", "flags"])
        .arg("--cache-dir")
        .arg(cache)
        .args(&bad.args)
        .env("HOME", home)
        .env("VEXIL_LOG", "info")
        .env("VEXIL_GIT_CONNECT_TIMEOUT", "3s")
        .env("VEXIL_GIT_TIMEOUT", "10s")
        .envs(bad.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().unwrap();
    let output = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .map_err(|_| format!("still running after {PATIENCE:?} (it should refuse to start)"))?
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    ensure(!output.status.success(), || {
        format!("exited successfully: {stderr}")
    })?;
    names_it(bad, "stderr", &stderr)
}

/// The error that named the problem (its line), or why not.
type Named = Result<String, String>;

/// `text` names the problem (one of `bad.words`) and holds no secret: the line that names it.
fn names_it(bad: &Bad, what: &str, text: &str) -> Named {
    let line = text.lines().find(|l| {
        let lower = l.to_lowercase();
        bad.words.iter().any(|w| lower.contains(w))
    });
    let line = line.ok_or_else(|| format!("{what} names none of {:?}:\n{text}", bad.words))?;
    no_secret(bad, what, text)?;
    Ok(line.trim().to_owned())
}

fn no_secret(bad: &Bad, what: &str, text: &str) -> Check {
    match bad.secrets.iter().find(|s| text.contains(s.as_str())) {
        Some(secret) => Err(format!("{what} holds a secret ({secret:?}):\n{text}")),
        None => Ok(()),
    }
}

/// With `--start-empty`: either it serves and `Status` names the problem (the last error), or
/// it stops naming it.
async fn reported(bad: &Bad, cache: &Path, home: &Path) -> Named {
    let mut args = bad.args.clone();
    args.extend(["--flags-dir".into(), "flags".into(), "--start-empty".into()]);
    args.extend(["--cache-dir".into(), cache.display().to_string()]);
    let mut env = bad.env.clone();
    env.extend([
        ("HOME".to_owned(), home.display().to_string()),
        ("VEXIL_GIT_CONNECT_TIMEOUT".to_owned(), "3s".to_owned()),
        ("VEXIL_GIT_TIMEOUT".to_owned(), "10s".to_owned()),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = match Server::try_start(&args, &env).await {
        Ok(server) => server,
        // It stopped: its stderr must name the problem.
        Err(e) if e.contains("exited") => {
            let stderr = e.split_once("stderr:\n").map_or(e.as_str(), |(_, s)| s);
            return names_it(bad, "stderr", stderr);
        }
        Err(e) => return Err(e),
    };
    let channel = Channel::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("gRPC connect: {e:?}"))?;
    let begun = Instant::now();
    loop {
        let status = FlagServiceClient::new(channel.clone())
            .status(proto::StatusRequest {})
            .await
            .map_err(|e| format!("Status: {e:?}"))?
            .into_inner();
        if let Some(error) = &status.last_error {
            let named = names_it(bad, "Status' last error", &error.message)?;
            ensure(status.revision.is_empty(), || {
                format!("serves a revision: {status:?}")
            })?;
            let (code, _, body) =
                crate::helpers::http(server.http, "GET", "/readyz", &[], "").await;
            ensure(code == 503, || format!("/readyz {code}: {body}"))?;
            no_secret(bad, "/readyz", &body)?;
            no_secret(bad, "the log", &server.log())?;
            return Ok(format!("Status: {named}"));
        }
        ensure(begun.elapsed() < PATIENCE, || {
            format!("no error in Status within {PATIENCE:?}: {status:?}")
        })?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every row of the table, with and without `--start-empty`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sources_are_refused_with_a_clear_error() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let (servers, table) = tokio::task::spawn_blocking(move || {
        let servers = Servers::start();
        let table = table(&servers, &dir);
        (servers, table)
    })
    .await
    .unwrap();
    let table = Arc::new(table);
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..table.len() {
        for start_empty in [false, true] {
            let (table, root) = (Arc::clone(&table), tmp.path().to_owned());
            tasks.spawn(async move {
                let bad = &table[index];
                let work = root.join(format!("run-{index}-{start_empty}"));
                let home = work.join("home");
                std::fs::create_dir_all(&home).unwrap();
                let cache = bad.cache.clone().unwrap_or_else(|| work.join("cache"));
                let outcome = if start_empty {
                    reported(bad, &cache, &home).await
                } else {
                    refused(bad, &cache, &home).await
                };
                let how = if start_empty {
                    "with --start-empty"
                } else {
                    "at start"
                };
                match outcome {
                    Ok(named) => Ok(format!("{}: {how}: {named}", bad.name)),
                    Err(e) => Err(format!("{}: {how}: {e}", bad.name)),
                }
            });
        }
    }
    let (mut failures, mut named) = (Vec::new(), Vec::new());
    while let Some(result) = tasks.join_next().await {
        match result {
            Ok(Ok(line)) => named.push(line),
            Ok(Err(e)) => failures.push(e),
            Err(e) => failures.push(panic_text(e, "panicked")),
        }
    }
    failures.sort();
    named.sort();
    println!(
        "bad input: {} rows x 2 in {:.1?}\n  {}",
        table.len(),
        started.elapsed(),
        named.join("\n  ")
    );
    assert!(
        failures.is_empty(),
        "{} failure(s):\n- {}\n\nservers' logs:\n{}",
        failures.len(),
        failures.join("\n- "),
        servers.logs()
    );
}
