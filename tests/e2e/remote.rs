//! Remote sources as deployed: a start from the cache while the remote is down (or holds an
//! invalid revision), cheap polls over a real `git daemon` (one shallow ref, no fetch while it
//! has not moved), and the process-wide git settings' errors. Only 127.0.0.1; bounded waits.

use std::process::Command;

use vexil_core::source::{RemoteOptions, RemoteSource};
use vexil_core::{AttemptResult, ReloadOptions, Reloader, Source, StartError};

use crate::helpers::git;
use crate::reload::{Repo, flags_yaml, remote_options, revision, value, wait_for, wait_value};

const BROKEN: &str = "flags:\n  a: [this is not a flag\n";

fn start(url: &str, options: RemoteOptions, fresh: bool) -> Result<Reloader, StartError> {
    Reloader::start(
        Box::new(RemoteSource::new(url, options)),
        ReloadOptions {
            require_fresh_start: fresh,
            ..ReloadOptions::default()
        },
    )
}

/// A `file://` remote whose `main` holds one good commit (`a` is "1"), its id, an empty cache
/// directory, and the URL.
fn good_origin() -> (Repo, String, tempfile::TempDir, String) {
    let origin = Repo::new();
    let good = origin.commit_flags(&flags_yaml(&[("a", "1")]), "good");
    let url = format!("file://{}", origin.path.display());
    (origin, good, tempfile::tempdir().unwrap(), url)
}

#[test]
fn a_restart_during_an_outage_serves_the_last_good_revision_until_the_remote_returns() {
    let (origin, good, cache, url) = good_origin();
    {
        let first = start(&url, remote_options(cache.path()), false).unwrap();
        assert_eq!(revision(first.live()), good);
        // A newer, invalid revision reaches the cache but is never served.
        let bad = origin.commit_flags(BROKEN, "broken");
        let attempt = first.reload().unwrap();
        assert!(
            matches!(attempt.result, AttemptResult::Invalid { .. }),
            "{attempt:?}"
        );
        assert_eq!(attempt.revision.as_deref(), Some(bad.as_str()));
    }

    // The git host goes down; the process restarts.
    let away = origin.path.with_extension("away");
    std::fs::rename(&origin.path, &away).unwrap();

    // Told to start fresh: today's fail-fast start.
    let err = start(&url, remote_options(cache.path()), true).unwrap_err();
    assert!(matches!(err, StartError::Source { .. }), "{err}");
    // Another ref of the same URL has no served revision of its own.
    let mut other = remote_options(cache.path());
    other.reference = Some("release".into());
    assert!(start(&url, other, false).is_err());
    // Another flags directory neither.
    let mut other = remote_options(cache.path());
    other.flags_dir = "elsewhere".into();
    assert!(start(&url, other, false).is_err());

    let reloader = start(&url, remote_options(cache.path()), false).unwrap();
    let live = reloader.live();
    assert_eq!(
        revision(live),
        good,
        "the last good revision, not the newer broken one"
    );
    assert_eq!(value(live, "a").as_deref(), Some("1"));
    let status = live.status();
    let stale = status.stale.clone().expect("reported stale");
    assert!(stale.reason.contains("cannot be read"), "{}", stale.reason);
    assert!(stale.reason.contains(&good), "{}", stale.reason);
    assert!(
        matches!(
            status.last_error.as_ref().map(|a| &a.result),
            Some(AttemptResult::SourceError { .. })
        ),
        "{status:?}"
    );
    // Polls keep failing (backing off) while the host is down, and it stays stale.
    wait_for("a failed poll", || live.status().counts.source_errors >= 2);
    assert!(live.status().stale.is_some());

    // The host returns with a fix: caught up, no longer stale.
    std::fs::rename(&away, &origin.path).unwrap();
    let fixed = origin.commit_flags(&flags_yaml(&[("a", "3")]), "fixed");
    wait_value(live, "a", Some("3"));
    assert_eq!(revision(live), fixed);
    assert_eq!(live.status().stale, None);
}

#[test]
fn an_invalid_revision_at_start_serves_the_last_good_one_and_is_not_stale() {
    let (origin, good, cache, url) = good_origin();
    drop(start(&url, remote_options(cache.path()), false).unwrap());
    let bad = origin.commit_flags(BROKEN, "broken");

    let err = start(&url, remote_options(cache.path()), true).unwrap_err();
    assert!(matches!(err, StartError::Invalid { .. }), "{err}");

    let reloader = start(&url, remote_options(cache.path()), false).unwrap();
    let live = reloader.live();
    assert_eq!(revision(live), good);
    let status = live.status();
    assert_eq!(status.stale, None, "the remote answered: not stale");
    let last_error = status.last_error.expect("the invalid revision is reported");
    assert_eq!(last_error.revision.as_deref(), Some(bad.as_str()));
    assert!(matches!(last_error.result, AttemptResult::Invalid { .. }));
}

#[test]
fn a_cache_recorded_for_another_url_is_never_used() {
    let (origin, _, cache, url) = good_origin();
    let source = RemoteSource::new(&url, remote_options(cache.path()));
    let served_cache = source.cache_path().to_owned();
    drop(Reloader::start(Box::new(source), ReloadOptions::default()).unwrap());

    // Another URL (unreachable) whose cache directory holds a copy of the first one's.
    let other_url = format!("file://{}-elsewhere", origin.path.display());
    let other = RemoteSource::new(&other_url, remote_options(cache.path()));
    let copy = Command::new("cp")
        .args([
            "-r",
            served_cache.to_str().unwrap(),
            other.cache_path().to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(copy.success());
    let err = Reloader::start(Box::new(other), ReloadOptions::default()).unwrap_err();
    assert!(matches!(err, StartError::Source { .. }), "{err}");
}

#[test]
fn polls_fetch_one_shallow_ref_and_only_when_it_moved() {
    let origin = Repo::new();
    for i in 0..20 {
        origin.commit_flags(&flags_yaml(&[("a", &i.to_string())]), &format!("c{i}"));
    }
    git(&origin.path, &["tag", "-a", "v1", "-m", "v1"]);
    git(&origin.path, &["branch", "other"]);
    git(&origin.path, &["checkout", "-q", "other"]);
    origin.commit_flags(&flags_yaml(&[("a", "other")]), "on other");
    git(&origin.path, &["checkout", "-q", "main"]);
    let base = origin.path.parent().unwrap();
    let (_daemon, port) = crate::matrix::servers::git_daemon(base, &base.join("daemon.log"));
    let url = format!("git://127.0.0.1:{port}/repo");
    let caches = tempfile::tempdir().unwrap();
    let mut source = RemoteSource::new(&url, remote_options(caches.path()));
    let cache = source.cache_path().to_owned();

    let first = source.read(None, true).unwrap().expect("a first revision");
    assert_eq!(first.revision, origin.head());
    assert_eq!(source.fetch_counts(), (0, 1));
    // One ref, one commit deep, no tags, no other branch.
    let refs = git(&cache, &["for-each-ref", "--format=%(refname)"]);
    assert_eq!(refs.trim(), "refs/remotes/origin/main");
    assert!(cache.join("shallow").is_file(), "a shallow cache");
    assert_eq!(git(&cache, &["rev-list", "--all", "--count"]).trim(), "1");

    // Unmoved: the ref advertisement only, no fetch.
    assert!(source.read(Some(&first.revision), false).unwrap().is_none());
    assert_eq!(source.fetch_counts(), (1, 1));

    // Moved: one more commit fetched.
    let next = origin.commit_flags(&flags_yaml(&[("a", "next")]), "next");
    let fetched = source
        .read(Some(&first.revision), false)
        .unwrap()
        .expect("the new commit");
    assert_eq!(fetched.revision, next);
    assert_eq!(source.fetch_counts(), (1, 2));
    // Still one commit deep (the new commit is the shallow boundary).
    assert_eq!(git(&cache, &["rev-list", "--all", "--count"]).trim(), "1");

    // A tag is fetched as a tag (and peeled to its commit), still alone.
    let mut options = remote_options(caches.path());
    options.reference = Some("v1".into());
    let tag_caches = tempfile::tempdir().unwrap();
    options.cache_dir = tag_caches.path().to_owned();
    let mut tagged = RemoteSource::new(&url, options);
    let at_tag = tagged.read(None, true).unwrap().unwrap();
    assert_eq!(
        at_tag.revision,
        git(&origin.path, &["rev-parse", "v1^{commit}"]).trim()
    );
    let refs = git(
        tagged.cache_path(),
        &["for-each-ref", "--format=%(refname)"],
    );
    assert_eq!(refs.trim(), "refs/tags/v1");
}

#[test]
fn the_git_ca_file_must_hold_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let err = vexil_core::source::set_git_ca_file(&missing)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot read the git CA file") && err.contains("missing.pem"),
        "{err}"
    );
    let not_pem = dir.path().join("key.pem");
    std::fs::write(
        &not_pem,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = vexil_core::source::set_git_ca_file(&not_pem)
        .unwrap_err()
        .to_string();
    assert!(err.contains("holds no PEM certificate"), "{err}");
}

/// `vexil serve` restarted while its git host is down: ready, serving the cached revision,
/// and saying so in `/readyz`, `Status`, `/metrics` and the log; fail-fast when told to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vexil_serve_restarted_during_an_outage_reports_the_source_stale() {
    let (origin, good, cache, url) = good_origin();
    let cache_dir = cache.path().to_str().unwrap().to_owned();
    let args = [
        "--ref",
        "main",
        "--flags-dir",
        "flags",
        "--cache-dir",
        &cache_dir,
    ];
    let with_url = |extra: &[&'static str]| {
        let mut all = vec![url.clone()];
        all.extend(args.iter().map(|s| (*s).to_owned()));
        all.extend(extra.iter().map(|s| (*s).to_owned()));
        all
    };
    {
        let argv = with_url(&[]);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let server = crate::faults::Server::start(&argv, &[]).await;
        assert_eq!(server.status().await.unwrap().revision, good);
    }
    std::fs::rename(&origin.path, origin.path.with_extension("away")).unwrap();

    let argv = with_url(&[]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let server = crate::faults::Server::start(&argv, &[("VEXIL_LOG", "warn")]).await;
    let status = server.status().await.unwrap();
    assert_eq!(status.revision, good);
    assert!(status.stale.contains("cannot be read"), "{status:?}");
    assert!(status.stale_since_unix_ms > 0);
    let (code, body) = server.get("/readyz").await.unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("stale"), "{body}");
    let (_, metrics) = server.get("/metrics").await.unwrap();
    assert!(metrics.contains("\nvexil_source_stale 1\n"), "{metrics}");
    assert!(server.log().contains("source stale"), "{}", server.log());
    drop(server);

    let argv = with_url(&["--require-fresh-start"]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let output = Command::new(env!("CARGO_BIN_EXE_vexil"))
        .arg("serve")
        .args(&argv)
        .args(crate::helpers::LOOPBACK_PORTS)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot connect to file://"), "{stderr}");
}

/// A cache directory that cannot be written stops the start, naming it and the option.
#[test]
fn a_cache_directory_that_cannot_be_written_is_a_clear_error() {
    let (_origin, _, tmp, url) = good_origin();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let cache = file.join("cache");
    let output = Command::new(env!("CARGO_BIN_EXE_vexil"))
        .args(["serve", &url])
        .args(["--cache-dir", cache.to_str().unwrap()])
        .args(crate::helpers::LOOPBACK_PORTS)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "the cache directory {} is not writable",
            cache.display()
        )) && stderr.contains("--cache-dir"),
        "{stderr}"
    );
}
