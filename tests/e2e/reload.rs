//! Sources and hot reload: directories, local git refs and remotes, in temp directories and temp
//! git repositories (no network). Waits are bounded polls for a state, never timing assertions.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vexil_core::diff::FlagRef;
use vexil_core::source::{
    DirOptions, DirSource, Fetched, GitOptions, GitSource, RemoteOptions, RemoteSource,
};
use vexil_core::{
    AttemptResult, ChangeEvent, Context, Live, ReloadOptions, Reloader, Source, SourceError,
    StartError,
};

use crate::helpers::git;

/// How long any expected state may take to appear before the test fails.
const PATIENCE: Duration = Duration::from_secs(15);

/// A flags file with string flags `key: value` in the default namespace.
pub(crate) fn flags_yaml(flags: &[(&str, &str)]) -> String {
    let mut out = String::from("flags:\n");
    for (key, value) in flags {
        out.push_str(&format!(
            "  {key}:\n    type: string\n    variants: {{ v: \"{value}\" }}\n    default: v\n"
        ));
    }
    out
}

/// Writes a file whole (a temporary file renamed over it), so that a watcher never reads it
/// half-written; in-place writes are tested on purpose where they matter.
pub(crate) fn write(path: &Path, text: &str) {
    let parent = path.parent().unwrap();
    std::fs::create_dir_all(parent).unwrap();
    let tmp = parent.join(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_str().unwrap()
    ));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The value `key` evaluates to now (`None`: no snapshot, or no such flag).
pub(crate) fn value(live: &Live, key: &str) -> Option<String> {
    let snapshot = live.snapshot()?;
    let eval = snapshot.evaluate("default", key, &Context::new()).ok()?;
    match &eval.variant.value {
        vexil_core::Value::String(s) => Some(s.to_string()),
        other => Some(format!("{other:?}")),
    }
}

pub(crate) fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub(crate) fn wait_value(live: &Live, key: &str, expected: Option<&str>) {
    wait_for(&format!("{key} = {expected:?}"), || {
        value(live, key).as_deref() == expected
    });
}

pub(crate) fn revision(live: &Live) -> String {
    live.snapshot().unwrap().revision().to_owned()
}

fn keys(refs: &[FlagRef]) -> Vec<String> {
    refs.iter()
        .map(|r| format!("{}/{}", r.namespace, r.key))
        .collect()
}

/// The next change event, waiting at most `PATIENCE`.
/// The swaps that change flags, through a channel, as a server's observer sees them.
fn change_events(live: &vexil_core::Live) -> std::sync::mpsc::Receiver<Arc<ChangeEvent>> {
    let (tx, rx) = std::sync::mpsc::channel();
    live.observe(move |_, swap| {
        if let Some(swap) = swap.filter(|s| !s.event.changes.is_empty()) {
            let _ = tx.send(Arc::clone(swap.event));
        }
    });
    rx
}

fn next_event(rx: &std::sync::mpsc::Receiver<Arc<ChangeEvent>>) -> Arc<ChangeEvent> {
    rx.recv_timeout(PATIENCE).expect("a change event")
}

/// Directory options for tests: a short quiet period, and no periodic rescan to hide a missed
/// event (every change must be seen through the watch).
fn dir_options() -> DirOptions {
    DirOptions {
        quiet_period: Duration::from_millis(50),
        rescan_interval: Duration::from_secs(3600),
    }
}

fn start_dir(root: &Path) -> Reloader {
    Reloader::start(
        Box::new(DirSource::new(root, dir_options())),
        ReloadOptions::default(),
    )
    .unwrap()
}

#[test]
fn directory_add_modify_rename_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(&root.join("a.yaml"), &flags_yaml(&[("a", "1")]));
    let reloader = start_dir(root);
    let live = reloader.live();
    let events = change_events(live);
    assert_eq!(value(live, "a").as_deref(), Some("1"));

    write(&root.join("team/b.yaml"), &flags_yaml(&[("b", "1")]));
    let event = next_event(&events);
    assert_eq!(keys(&event.changes.added), ["default/b"]);
    assert!(event.changes.changed.is_empty() && event.changes.removed.is_empty());
    assert_eq!(value(live, "b").as_deref(), Some("1"));

    write(&root.join("a.yaml"), &flags_yaml(&[("a", "2")]));
    let event = next_event(&events);
    assert_eq!(keys(&event.changes.changed), ["default/a"]);
    assert_eq!(value(live, "a").as_deref(), Some("2"));

    // Moving a flag to another file changes the revision but no flag: a swap, no event.
    let before = revision(live);
    std::fs::rename(root.join("team/b.yaml"), root.join("team/c.yaml")).unwrap();
    wait_for("a new revision after the rename", || {
        revision(live) != before
    });
    assert_eq!(value(live, "b").as_deref(), Some("1"));

    std::fs::remove_file(root.join("team/c.yaml")).unwrap();
    let event = next_event(&events);
    assert_eq!(keys(&event.changes.removed), ["default/b"]);
    assert_eq!(value(live, "b"), None);
    // The rename published nothing: the removal was the next event.
    assert!(events.try_recv().is_err());
}

#[test]
fn directory_survives_rename_saves() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(&root.join("a.yaml"), &flags_yaml(&[("a", "0")]));
    let reloader = start_dir(root);
    for i in 1..=5 {
        // How editors save: write a temporary file, then rename it over the original.
        let tmp_file = root.join(".a.yaml.swp");
        write(&tmp_file, &flags_yaml(&[("a", &i.to_string())]));
        std::fs::rename(&tmp_file, root.join("a.yaml")).unwrap();
        wait_value(reloader.live(), "a", Some(&i.to_string()));
    }
}

#[cfg(unix)]
#[test]
fn directory_follows_configmap_symlink_swaps() {
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // The layout kubelet makes: files link through `..data`, which links to a timestamped dir.
    write(&root.join("..v1/a.yaml"), &flags_yaml(&[("a", "v1")]));
    symlink("..v1", root.join("..data")).unwrap();
    symlink("..data/a.yaml", root.join("a.yaml")).unwrap();
    let reloader = start_dir(root);
    assert_eq!(value(reloader.live(), "a").as_deref(), Some("v1"));

    for version in ["v2", "v3"] {
        write(
            &root.join(format!("..{version}/a.yaml")),
            &flags_yaml(&[("a", version)]),
        );
        symlink(format!("..{version}"), root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        wait_value(reloader.live(), "a", Some(version));
    }
}

#[test]
fn directory_follows_git_checkout() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    git(root, &["init", "-q", "-b", "main"]);
    write(&root.join("a.yaml"), &flags_yaml(&[("a", "main")]));
    git(root, &["add", "."]);
    git(root, &["commit", "-q", "-m", "main"]);
    git(root, &["checkout", "-q", "-b", "other"]);
    write(&root.join("a.yaml"), &flags_yaml(&[("a", "other")]));
    write(&root.join("b.yaml"), &flags_yaml(&[("b", "other")]));
    git(root, &["add", "."]);
    git(root, &["commit", "-q", "-m", "other"]);

    let reloader = start_dir(root);
    assert_eq!(value(reloader.live(), "a").as_deref(), Some("other"));
    git(root, &["checkout", "-q", "main"]);
    wait_value(reloader.live(), "b", None);
    assert_eq!(value(reloader.live(), "a").as_deref(), Some("main"));
}

#[test]
fn directory_invalid_change_keeps_the_good_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(&root.join("a.yaml"), &flags_yaml(&[("a", "good")]));
    let reloader = start_dir(root);
    let live = reloader.live();
    let good = revision(live);

    write(&root.join("a.yaml"), "flags:\n  a:\n    defualt: true\n");
    wait_for("the invalid revision to be reported", || {
        matches!(
            live.status().last_attempt.map(|a| a.result),
            Some(AttemptResult::Invalid { .. })
        )
    });
    let status = live.status();
    let Some(AttemptResult::Invalid { diagnostics }) = status.last_attempt.map(|a| a.result) else {
        unreachable!()
    };
    let first = &diagnostics[0];
    assert_eq!(
        (first.file.as_str(), first.pos.line, first.pos.column),
        ("a.yaml", 3, 5)
    );
    assert_eq!(first.code.as_str(), "unknown-field");
    assert_eq!(revision(live), good, "the last good snapshot keeps serving");
    assert_eq!(value(live, "a").as_deref(), Some("good"));
    assert_eq!(status.serving.unwrap().revision, good);
    assert!(status.last_error.is_some());
    assert_eq!(status.counts.invalid, 1);

    write(&root.join("a.yaml"), &flags_yaml(&[("a", "fixed")]));
    wait_value(live, "a", Some("fixed"));
    let status = live.status();
    assert_eq!(status.consecutive_failures, 0);
    assert!(matches!(
        status.last_attempt.unwrap().result,
        AttemptResult::Swapped { changes: 1 }
    ));
    // The error stays on record after the fix.
    assert!(status.last_error.is_some());
}

#[test]
fn directory_burst_of_1000_changes_ends_in_the_final_state() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(&root.join("a.yaml"), &flags_yaml(&[("a", "start")]));
    let reloader = start_dir(root);
    for i in 0..1000 {
        // Half of them through a rename, half in place, across two files.
        let text = flags_yaml(&[("a", &i.to_string())]);
        if i % 2 == 0 {
            write(&root.join("a.yaml"), &text);
        } else {
            // In place: a read may see a half-written file, but the final state must win.
            std::fs::write(root.join("a.yaml"), &text).unwrap();
        }
        write(&root.join("b.yaml"), &flags_yaml(&[("b", &i.to_string())]));
    }
    wait_value(reloader.live(), "a", Some("999"));
    wait_value(reloader.live(), "b", Some("999"));
    let status = reloader.live().status();
    assert_eq!(status.counts.invalid, 0);
    assert_eq!(status.counts.source_errors, 0);
}

#[test]
fn starting_invalid_fails_unless_told_to_wait() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(&root.join("a.yaml"), "flags: [\n");
    let err = Reloader::start(
        Box::new(DirSource::new(root, dir_options())),
        ReloadOptions::default(),
    )
    .unwrap_err();
    match &err {
        StartError::Invalid { diagnostics, .. } => {
            assert_eq!(diagnostics[0].file, "a.yaml");
            assert_eq!(diagnostics[0].code.as_str(), "yaml-syntax");
        }
        other => panic!("expected an invalid start, got {other}"),
    }
    assert!(err.to_string().contains("invalid (1 errors)"), "{err}");

    let missing = Reloader::start(
        Box::new(DirSource::new(root.join("nope"), dir_options())),
        ReloadOptions::default(),
    );
    assert!(matches!(
        missing,
        Err(StartError::Watch(_) | StartError::Source { .. })
    ));

    let reloader = Reloader::start(
        Box::new(DirSource::new(root, dir_options())),
        ReloadOptions {
            start_empty: true,
            ..ReloadOptions::default()
        },
    )
    .unwrap();
    assert!(reloader.live().snapshot().is_none());
    write(&root.join("a.yaml"), &flags_yaml(&[("a", "ok")]));
    wait_value(reloader.live(), "a", Some("ok"));
}

#[test]
fn start_empty_waits_for_a_directory_that_does_not_exist_yet() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("not-mounted-yet");
    let reloader = Reloader::start(
        Box::new(DirSource::new(&root, dir_options())),
        ReloadOptions {
            start_empty: true,
            ..ReloadOptions::default()
        },
    )
    .unwrap();
    assert!(reloader.live().snapshot().is_none());
    // With start_empty the first read happens on the reloader thread, after start returns.
    wait_for("the first read to fail", || {
        reloader
            .live()
            .status()
            .last_attempt
            .is_some_and(|a| matches!(a.result, AttemptResult::SourceError { .. }))
    });
    // The mount appears: found by the quick poll of a missing root, then watched.
    let staging = tmp.path().join("staging");
    write(&staging.join("a.yaml"), &flags_yaml(&[("a", "mounted")]));
    std::fs::rename(&staging, &root).unwrap();
    wait_value(reloader.live(), "a", Some("mounted"));
    write(&root.join("a.yaml"), &flags_yaml(&[("a", "watched")]));
    wait_value(reloader.live(), "a", Some("watched"));
}

#[test]
fn a_bad_file_next_to_unchanged_ones_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(&root.join("a.yaml"), &flags_yaml(&[("a", "1")]));
    let reloader = start_dir(root);
    let live = reloader.live();
    let good = revision(live);
    // A binary file is not read, so the content hash of the files read is unchanged.
    std::fs::write(root.join("b.yaml"), b"\x00\x01").unwrap();
    wait_for("the bad file to be reported", || {
        live.status().consecutive_failures == 1
    });
    let Some(AttemptResult::Invalid { diagnostics }) = live.status().last_attempt.map(|a| a.result)
    else {
        panic!("expected an invalid attempt")
    };
    assert_eq!(
        (diagnostics[0].file.as_str(), diagnostics[0].code.as_str()),
        ("b.yaml", "binary-file")
    );
    assert_eq!(revision(live), good);
    std::fs::remove_file(root.join("b.yaml")).unwrap();
    wait_for("the failure to clear", || {
        live.status().consecutive_failures == 0
    });
}

// ---- local git ----

pub(crate) struct Repo {
    _tmp: tempfile::TempDir,
    pub(crate) path: PathBuf,
}

impl Repo {
    pub(crate) fn new() -> Repo {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("repo");
        std::fs::create_dir(&path).unwrap();
        git(&path, &["init", "-q", "-b", "main"]);
        Repo { _tmp: tmp, path }
    }

    /// Writes `flags/a.yaml` and commits it; returns the commit id.
    pub(crate) fn commit_flags(&self, text: &str, message: &str) -> String {
        write(&self.path.join("flags/a.yaml"), text);
        self.commit_all(message, &[])
    }

    pub(crate) fn commit_all(&self, message: &str, extra: &[&str]) -> String {
        git(&self.path, &["add", "-A"]);
        let mut args = vec!["commit", "-q", "--allow-empty", "-m", message];
        args.extend_from_slice(extra);
        git(&self.path, &args);
        self.head()
    }

    pub(crate) fn head(&self) -> String {
        git(&self.path, &["rev-parse", "HEAD"]).trim().to_owned()
    }
}

fn git_options(reference: &str) -> GitOptions {
    GitOptions {
        reference: reference.into(),
        flags_dir: "flags".into(),
        poll_interval: Duration::from_millis(20),
    }
}

fn start_git(repo: &Repo, reference: &str) -> Reloader {
    Reloader::start(
        Box::new(GitSource::new(&repo.path, git_options(reference))),
        ReloadOptions::default(),
    )
    .unwrap()
}

#[test]
fn git_ref_follows_commits_amends_forced_refs_and_deletion() {
    let repo = Repo::new();
    let first = repo.commit_flags(&flags_yaml(&[("a", "1")]), "one");
    let reloader = start_git(&repo, "main");
    let live = reloader.live();
    let events = change_events(live);
    assert_eq!(revision(live), first, "the revision is the commit id");
    assert_eq!(value(live, "a").as_deref(), Some("1"));

    // The working tree is never read, even on a forced reload.
    write(
        &repo.path.join("flags/a.yaml"),
        &flags_yaml(&[("a", "uncommitted")]),
    );
    let attempt = reloader.reload().unwrap();
    assert_eq!(attempt.result, AttemptResult::Unchanged);
    assert_eq!(value(live, "a").as_deref(), Some("1"));

    let second = repo.commit_flags(&flags_yaml(&[("a", "2")]), "two");
    let event = next_event(&events);
    assert_eq!(event.old_revision.as_deref(), Some(first.as_str()));
    assert_eq!(event.revision, second);
    assert_eq!(keys(&event.changes.changed), ["default/a"]);
    assert_eq!(value(live, "a").as_deref(), Some("2"));

    // Amend: the ref is forced to a commit that is not a descendant.
    write(&repo.path.join("flags/a.yaml"), &flags_yaml(&[("a", "3")]));
    let amended = repo.commit_all("two, amended", &["--amend"]);
    assert_eq!(next_event(&events).revision, amended);
    assert_eq!(value(live, "a").as_deref(), Some("3"));

    // Forced back to an older commit.
    git(&repo.path, &["update-ref", "refs/heads/main", &first]);
    assert_eq!(next_event(&events).revision, first);
    assert_eq!(value(live, "a").as_deref(), Some("1"));

    // The ref is deleted: keep serving, report the error.
    git(&repo.path, &["checkout", "-q", "--detach"]);
    git(&repo.path, &["update-ref", "-d", "refs/heads/main"]);
    wait_for("the deleted ref to be reported", || {
        matches!(
            live.status().last_attempt.map(|a| a.result),
            Some(AttemptResult::SourceError { .. })
        )
    });
    let status = live.status();
    let Some(AttemptResult::SourceError { message }) = status.last_attempt.map(|a| a.result) else {
        unreachable!()
    };
    assert!(message.contains("cannot resolve `main`"), "{message}");
    assert_eq!(value(live, "a").as_deref(), Some("1"));

    // The ref comes back.
    git(&repo.path, &["update-ref", "refs/heads/main", &second]);
    assert_eq!(next_event(&events).revision, second);
    assert_eq!(live.status().consecutive_failures, 0);
}

#[test]
fn git_invalid_commit_then_fix_and_a_commit_that_changes_no_flag() {
    let repo = Repo::new();
    repo.commit_flags(&flags_yaml(&[("a", "good")]), "good");
    let reloader = start_git(&repo, "main");
    let live = reloader.live();
    let events = change_events(live);
    let good = revision(live);

    let bad = repo.commit_flags("flags:\n  a:\n    type: strin\n", "broken");
    wait_for("the invalid commit to be reported", || {
        live.status().last_attempt.and_then(|a| a.revision) == Some(bad.clone())
    });
    let status = live.status();
    let Some(AttemptResult::Invalid { diagnostics }) = status.last_attempt.map(|a| a.result) else {
        panic!("expected an invalid attempt")
    };
    assert_eq!(
        (diagnostics[0].file.as_str(), diagnostics[0].pos.line),
        ("a.yaml", 3)
    );
    assert_eq!(revision(live), good);
    assert_eq!(status.consecutive_failures, 1);

    let fixed = repo.commit_flags(&flags_yaml(&[("a", "fixed")]), "fix");
    let event = next_event(&events);
    assert_eq!(
        (event.old_revision.as_deref(), event.revision.as_str()),
        (Some(good.as_str()), fixed.as_str())
    );
    assert_eq!(value(live, "a").as_deref(), Some("fixed"));

    // A commit that changes no flag (a comment and a README): served, but no event.
    write(&repo.path.join("flags/README.md"), "# flags\n");
    let text = format!("# a comment\n{}", flags_yaml(&[("a", "fixed")]));
    let quiet = repo.commit_flags(&text, "comments only");
    wait_for("the no-op commit to be served", || revision(live) == quiet);
    let next = repo.commit_flags(&flags_yaml(&[("a", "after")]), "after");
    let event = next_event(&events);
    assert_eq!(event.old_revision.as_deref(), Some(quiet.as_str()));
    assert_eq!(event.revision, next);
}

#[test]
fn git_ref_moved_back_to_the_served_commit_clears_the_failure() {
    let repo = Repo::new();
    let good = repo.commit_flags(&flags_yaml(&[("a", "good")]), "good");
    let reloader = start_git(&repo, "main");
    let live = reloader.live();
    let bad = repo.commit_flags("flags: [\n", "broken");
    wait_for("the invalid commit", || {
        live.status().consecutive_failures == 1
    });
    // Still invalid on every later poll: the state stays, and is not counted again.
    std::thread::sleep(Duration::from_millis(100));
    let status = live.status();
    assert_eq!(status.counts.invalid, 1);
    assert_eq!(status.consecutive_failures, 1);
    assert_eq!(
        status.last_attempt.unwrap().revision.as_deref(),
        Some(bad.as_str())
    );

    // The usual fix: reset the branch to the good commit.
    git(&repo.path, &["update-ref", "refs/heads/main", &good]);
    wait_for("the failure to clear", || {
        live.status().consecutive_failures == 0
    });
    let status = live.status();
    let last = status.last_attempt.unwrap();
    assert_eq!(last.revision.as_deref(), Some(good.as_str()));
    assert_eq!(last.result, AttemptResult::Unchanged);
    assert_eq!(revision(live), good);
}

#[test]
fn git_tag_and_missing_flags_dir() {
    let repo = Repo::new();
    let first = repo.commit_flags(&flags_yaml(&[("a", "v1")]), "v1");
    git(
        &repo.path,
        &["tag", "-a", "-m", "release", "release", &first],
    );
    repo.commit_flags(&flags_yaml(&[("a", "later")]), "later");
    let reloader = start_git(&repo, "release");
    let live = reloader.live();
    assert_eq!(value(live, "a").as_deref(), Some("v1"));
    assert_eq!(
        revision(live),
        first,
        "an annotated tag peels to its commit"
    );

    // Moving the tag moves the flags.
    git(&repo.path, &["rm", "-q", "-r", "flags"]);
    let gone = repo.commit_all("flags removed", &[]);
    git(
        &repo.path,
        &["tag", "-f", "-a", "-m", "moved", "release", &gone],
    );
    wait_for("the missing flags dir to be reported", || {
        live.status().last_attempt.and_then(|a| a.revision) == Some(gone.clone())
    });
    let Some(AttemptResult::Invalid { diagnostics }) = live.status().last_attempt.map(|a| a.result)
    else {
        panic!("expected an invalid attempt")
    };
    assert_eq!(diagnostics[0].code.as_str(), "missing-flags-dir");
    assert_eq!(value(live, "a").as_deref(), Some("v1"));
}

#[test]
fn git_source_skips_non_flag_files_and_reports_bad_blobs() {
    let repo = Repo::new();
    write(&repo.path.join("flags/a.yaml"), &flags_yaml(&[("a", "1")]));
    write(&repo.path.join("flags/a.test.yaml"), "not: [flags\n");
    write(&repo.path.join("flags/.hidden/x.yaml"), "not: [flags\n");
    write(&repo.path.join("outside.yaml"), "not: [flags\n");
    repo.commit_all("files", &[]);
    let reloader = start_git(&repo, "HEAD");
    assert_eq!(value(reloader.live(), "a").as_deref(), Some("1"));

    std::fs::write(repo.path.join("flags/b.yaml"), b"a: \x00\x01").unwrap();
    let bad = repo.commit_all("binary", &[]);
    let attempt = reloader.reload().unwrap();
    assert_eq!(attempt.revision.as_deref(), Some(bad.as_str()));
    let AttemptResult::Invalid { diagnostics } = attempt.result else {
        panic!("expected an invalid attempt")
    };
    assert_eq!(
        (diagnostics[0].file.as_str(), diagnostics[0].code.as_str()),
        ("b.yaml", "binary-file")
    );
}

// ---- remote git ----

pub(crate) fn remote_options(cache: &Path) -> RemoteOptions {
    let mut options = RemoteOptions::new(cache);
    options.reference = Some("main".into());
    options.flags_dir = "flags".into();
    options.interval = Duration::from_millis(50);
    options.max_backoff = Duration::from_millis(400);
    options
}

#[test]
fn remote_fetches_follows_force_pushes_and_survives_outages() {
    let origin = Repo::new();
    origin.commit_flags(&flags_yaml(&[("a", "1")]), "one");
    let cache = tempfile::tempdir().unwrap();
    let url = format!("file://{}", origin.path.display());
    let source = RemoteSource::new(&url, remote_options(cache.path()));
    let cache_repo = source.cache_path().to_owned();
    let reloader = Reloader::start(Box::new(source), ReloadOptions::default()).unwrap();
    let live = reloader.live();
    assert_eq!(value(live, "a").as_deref(), Some("1"));
    assert!(live.status().source.starts_with("git remote file://"));

    // A new commit is fetched on the interval.
    let second = origin.commit_flags(&flags_yaml(&[("a", "2")]), "two");
    wait_value(live, "a", Some("2"));
    assert_eq!(revision(live), second);

    // A force-push (amend).
    write(
        &origin.path.join("flags/a.yaml"),
        &flags_yaml(&[("a", "2b")]),
    );
    let amended = origin.commit_all("two, amended", &["--amend"]);
    wait_value(live, "a", Some("2b"));
    assert_eq!(revision(live), amended);

    // The remote disappears: keep serving, report, back off (keeping the cache); then it
    // comes back.
    let marker = cache_repo.join("vexil-test-marker");
    std::fs::write(&marker, "").unwrap();
    let moved = origin.path.with_extension("away");
    std::fs::rename(&origin.path, &moved).unwrap();
    wait_for("the unreachable remote to be reported", || {
        live.status().consecutive_failures >= 2
    });
    assert_eq!(value(live, "a").as_deref(), Some("2b"));
    std::fs::rename(&moved, &origin.path).unwrap();
    let third = origin.commit_flags(&flags_yaml(&[("a", "3")]), "three");
    wait_value(live, "a", Some("3"));
    assert_eq!(revision(live), third);
    assert!(
        marker.exists(),
        "an unreachable remote must not cost the cache"
    );

    // The branch is deleted on the remote.
    git(&origin.path, &["checkout", "-q", "--detach"]);
    git(&origin.path, &["branch", "-q", "-D", "main"]);
    let attempt = reloader.reload().unwrap();
    let AttemptResult::SourceError { message } = attempt.result else {
        panic!("expected a source error, got {attempt:?}")
    };
    assert!(message.contains("`main` is not on file://"), "{message}");
    assert_eq!(value(live, "a").as_deref(), Some("3"));

    // The cache loses its object store, then the branch comes back with a new commit: the
    // cache is cloned again (by the next poll or the reload, whichever comes first).
    std::fs::remove_dir_all(cache_repo.join("objects")).unwrap();
    git(&origin.path, &["checkout", "-q", "-b", "main"]);
    let fourth = origin.commit_flags(&flags_yaml(&[("a", "4")]), "four");
    reloader.reload().unwrap();
    wait_value(live, "a", Some("4"));
    assert_eq!(revision(live), fourth);
    assert!(cache_repo.join("objects").is_dir());
    assert_eq!(live.status().consecutive_failures, 0);
}

#[test]
fn remote_damaged_cache_is_cloned_again() {
    let origin = Repo::new();
    origin.commit_flags(&flags_yaml(&[("a", "1"), ("b", "1")]), "one");
    let cache = tempfile::tempdir().unwrap();
    let mut options = remote_options(cache.path());
    options.interval = Duration::from_secs(3600);
    options.reference = None; // the remote's default branch
    let source = RemoteSource::new(origin.path.to_str().unwrap(), options);
    let cache_repo = source.cache_path().to_owned();
    let reloader = Reloader::start(Box::new(source), ReloadOptions::default()).unwrap();
    assert_eq!(value(reloader.live(), "a").as_deref(), Some("1"));

    // Garbage in every object file and in HEAD: git cannot open the cache any more.
    let objects = walk_files(&cache_repo.join("objects"));
    assert!(
        !objects.is_empty(),
        "the cache holds object files to damage"
    );
    for entry in objects {
        std::fs::write(entry, b"garbage").unwrap();
    }
    std::fs::write(cache_repo.join("HEAD"), b"garbage").unwrap();
    origin.commit_flags(&flags_yaml(&[("a", "2"), ("b", "1")]), "two");
    let attempt = reloader.reload().unwrap();
    assert!(
        matches!(attempt.result, AttemptResult::Swapped { changes: 1 }),
        "{attempt:?}"
    );
    assert_eq!(value(reloader.live(), "a").as_deref(), Some("2"));
    let leftovers = walk_files(&cache_repo.join("objects"))
        .into_iter()
        .filter(|f| std::fs::read(f).unwrap() == b"garbage")
        .count();
    assert_eq!(leftovers, 0, "the damaged cache was cloned again");
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn remote_unreachable_at_start_fails_clearly() {
    let cache = tempfile::tempdir().unwrap();
    let source = RemoteSource::new(
        "file:///nonexistent/vexil-flags",
        remote_options(cache.path()),
    );
    let err = Reloader::start(Box::new(source), ReloadOptions::default()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("cannot connect to file:///nonexistent/vexil-flags"),
        "{text}"
    );
}

// ---- concurrency ----

/// A source whose content the test sets: two flags that always hold the same number.
#[derive(Debug)]
struct Counter(Arc<AtomicU64>);

impl Source for Counter {
    fn describe(&self) -> String {
        "counter".into()
    }

    fn next_poll(&self, _failures: u32) -> Duration {
        Duration::from_secs(3600)
    }

    fn read(&mut self, known: Option<&str>, force: bool) -> Result<Option<Fetched>, SourceError> {
        let n = self.0.load(Ordering::SeqCst).to_string();
        if !force && known == Some(n.as_str()) {
            return Ok(None);
        }
        let text = flags_yaml(&[("x", &n), ("y", &n)]);
        Ok(Some(Fetched {
            revision: n,
            loaded: vexil_core::source::from_memory([("f.yaml", text)]),
        }))
    }
}

#[test]
fn readers_see_only_whole_snapshots_across_1000_swaps() {
    let counter = Arc::new(AtomicU64::new(0));
    let reloader = Reloader::start(
        Box::new(Counter(Arc::clone(&counter))),
        ReloadOptions::default(),
    )
    .unwrap();
    let live = Arc::clone(reloader.live());
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let live = Arc::clone(&live);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let ctx = Context::new();
                let mut reads = 0u64;
                let mut last = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let guard = live.load();
                    let snapshot = guard.as_ref().expect("a snapshot is always served");
                    let x = snapshot
                        .evaluate("default", "x", &ctx)
                        .expect("x evaluates");
                    let y = snapshot
                        .evaluate("default", "y", &ctx)
                        .expect("y evaluates");
                    assert_eq!(x.variant.value, y.variant.value, "a torn snapshot");
                    let vexil_core::Value::String(n) = &x.variant.value else {
                        panic!("x is a string flag")
                    };
                    assert_eq!(snapshot.revision(), &**n);
                    let n: u64 = n.parse().unwrap();
                    assert!(n >= last, "revisions went backwards: {last} -> {n}");
                    last = n;
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for i in 1..=1000u64 {
        counter.store(i, Ordering::SeqCst);
        let attempt = reloader.reload().unwrap();
        assert_eq!(
            attempt.result,
            AttemptResult::Swapped { changes: 2 },
            "swap {i}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(reads > 0);
    assert_eq!(value(&live, "x").as_deref(), Some("1000"));
    assert_eq!(live.status().counts.swaps, 1001);
}
