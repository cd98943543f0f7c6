//! A remote git repository: fetched into a bare cache repository, then read like a local one.
//!
//! A poll is cheap: it connects and reads the remote's ref advertisement, and fetches only when
//! the served ref names a commit the cache does not hold; then it fetches that one ref, shallow
//! (depth 1; local paths and `file://` in full, which libgit2 cannot fetch shallow), without
//! tags unless the ref is a tag. A force-push is just a new commit id and a deleted ref is an
//! error (the last good snapshot keeps serving). A cache that git cannot use (damaged objects,
//! a broken config) is removed and cloned again.
//!
//! The cache records the revision it last served (`cache.rs`), so that a process starting while
//! the remote is unreachable, or holds an invalid revision, serves it (`Source::last_served`).
//!
//! Transports: local paths, `file://`, `git://`, `http(s)://` and `ssh://` (libgit2, libssh2
//! and OpenSSL are built in). Credentials and host keys: `transport.rs`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use git2::{AutotagOption, Direction, ErrorClass, FetchOptions, FetchPrune, Oid, Repository};

use super::cache::{cache_name, record_served, remove_stale_temporaries, served, served_key};
use super::git::{flags_dir_suffix, read_commit};
use super::transport::{
    Credentials, HostKeyRefusal, callbacks, is_local, mark_network_use, redact, scrub_error,
    secrets,
};
use super::{Fetched, Source, SourceError};
use crate::reload::after;

/// What a commit-id reference fetches when the cache lacks the commit (an id is not
/// advertised, so the branches are fetched in full and searched).
const ALL_BRANCHES: [&str; 1] = ["+refs/heads/*:refs/remotes/origin/*"];

#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// A branch, tag or commit id; `None` follows the remote's default branch (its `HEAD`).
    pub reference: Option<String>,
    /// The flags root inside the repository (`""` for the top).
    pub flags_dir: String,
    /// Where clones are kept (one sub-directory per URL).
    pub cache_dir: PathBuf,
    /// How often to fetch (each wait varies by up to ±10 %, so replicas do not poll in step).
    pub interval: Duration,
    /// The longest wait between attempts while the remote keeps failing.
    pub max_backoff: Duration,
    /// A fetch still transferring after this long is abandoned (and retried later). This is
    /// checked in libgit2's progress callbacks, which run only while pack data or progress
    /// messages arrive: it bounds a transfer that keeps trickling, never a silent server.
    /// Silence is bounded by the process-wide socket timeouts of `set_git_timeouts` (a connect
    /// timeout, and a read timeout for each wait for data), which apply to `git://`, `http://`
    /// and the sockets under `https://` and `ssh://`. Neither bounds a server that trickles
    /// its ref advertisement a byte at a time (no callback runs before the pack): the read in
    /// progress then shows in `Status::reader` (`reading_since`).
    pub fetch_timeout: Duration,
    pub credentials: Credentials,
}

impl RemoteOptions {
    pub fn new(cache_dir: impl Into<PathBuf>) -> RemoteOptions {
        RemoteOptions {
            reference: None,
            flags_dir: String::new(),
            cache_dir: cache_dir.into(),
            interval: Duration::from_secs(30),
            max_backoff: Duration::from_secs(300),
            fetch_timeout: Duration::from_secs(120),
            credentials: Credentials::default(),
        }
    }
}

pub struct RemoteSource {
    url: String,
    options: RemoteOptions,
    cache: PathBuf,
    repo: Option<Repository>,
    /// Whether stale temporary files were looked for in the cache (once, at its first opening).
    swept: bool,
    /// Replaced by `***` in every error (libgit2 builds some messages from the URL).
    secrets: Vec<String>,
    /// What the served-revision record is kept for (`cache::served_key`).
    served_key: String,
    /// Fetches skipped because the remote's ref had not moved, and fetches made (for tests and
    /// benchmarks: `fetch_counts`).
    skipped: u64,
    fetched: u64,
}

impl std::fmt::Debug for RemoteSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSource")
            .field("url", &redact(&self.url))
            .field("options", &self.options)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl RemoteSource {
    pub fn new(url: impl Into<String>, options: RemoteOptions) -> RemoteSource {
        let url = url.into();
        let cache = options.cache_dir.join(cache_name(&url));
        let secrets = secrets(&url, &options.credentials);
        let served_key = served_key(&url, options.reference.as_deref(), &options.flags_dir);
        RemoteSource {
            url,
            options,
            cache,
            repo: None,
            swept: false,
            secrets,
            served_key,
            skipped: 0,
            fetched: 0,
        }
    }

    /// The cache repository of this URL.
    pub fn cache_path(&self) -> &Path {
        &self.cache
    }

    /// Polls that found the ref unmoved (no fetch), and fetches made.
    pub fn fetch_counts(&self) -> (u64, u64) {
        (self.skipped, self.fetched)
    }

    fn open_cache(&mut self) -> Result<&Repository, SourceError> {
        if !self.swept {
            self.swept = true;
            remove_stale_temporaries(&self.cache);
        }
        let repo = match self.repo.take() {
            Some(repo) => repo,
            None => match Repository::open_bare(&self.cache) {
                Ok(repo) => repo,
                Err(_) => {
                    // Missing or unusable: start a fresh clone.
                    self.wipe()?;
                    Repository::init_bare(&self.cache).map_err(SourceError::git(format!(
                        "cannot create the git cache {}",
                        self.cache.display()
                    )))?
                }
            },
        };
        Ok(self.repo.insert(repo))
    }

    fn wipe(&mut self) -> Result<(), SourceError> {
        self.repo = None;
        match std::fs::remove_dir_all(&self.cache) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SourceError::Cache {
                path: self.cache.clone(),
                source: e,
            }),
        }
    }

    /// Asks the remote where the reference points, fetches it if the cache lacks that commit,
    /// and returns the commit.
    fn fetch(&mut self) -> Result<Oid, SourceError> {
        let url = self.url.clone();
        let wanted = self
            .options
            .reference
            .clone()
            .unwrap_or_else(|| "HEAD".into());
        let deadline = after(Instant::now(), self.options.fetch_timeout);
        let shown = redact(&url);
        let local = is_local(&url);
        mark_network_use(&url);
        let refusal = HostKeyRefusal::default();
        let connect = callbacks(&url, &self.options.credentials, deadline, &refusal);
        let fetching = callbacks(&url, &self.options.credentials, deadline, &refusal);
        let repo = self.open_cache()?;
        let mut remote = repo
            .remote_anonymous(&url)
            .map_err(SourceError::git(format!("invalid remote {shown}")))?;
        let mut connection = remote
            .connect_auth(Direction::Fetch, Some(connect), None)
            .map_err(|e| refusal.explain(e))
            .map_err(SourceError::git(format!("cannot connect to {shown}")))?;
        // The remote's refs, as advertised now: a deleted ref is gone from them.
        let advertised: Vec<(String, Oid, Option<String>)> = connection
            .list()
            .map_err(SourceError::git(format!("cannot list the refs of {shown}")))?
            .iter()
            .map(|h| {
                let target = h.symref_target().map(str::to_owned);
                (h.name().to_owned(), h.oid(), target)
            })
            .collect();
        let candidates = [
            wanted.clone(),
            format!("refs/heads/{wanted}"),
            format!("refs/tags/{wanted}"),
        ];
        let found = candidates
            .iter()
            .find_map(|c| advertised.iter().find(|(name, _, _)| name == c));
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(fetching)
            .prune(FetchPrune::Off)
            .download_tags(AutotagOption::None);
        let mut did_fetch = false;
        let target = match found {
            Some((name, oid, symref)) => {
                if repo.find_object(*oid, None).is_ok() {
                    // The ref has not moved (or moved to a commit the cache holds): no fetch.
                    *oid
                } else {
                    // `HEAD` is fetched by the branch it names, so the tracking ref is a branch.
                    let name = symref.as_deref().unwrap_or(name);
                    let spec = format!("+{name}:{}", tracking_ref(name));
                    if !local {
                        options.depth(1);
                    }
                    connection
                        .remote()
                        .fetch(&[spec.as_str()], Some(&mut options), None)
                        .map_err(SourceError::git(format!("cannot fetch {shown}")))?;
                    did_fetch = true;
                    *oid
                }
            }
            // A commit id is not advertised; it is found among the fetched objects.
            None if looks_like_commit_id(&wanted) => {
                let id = |repo: &Repository| repo.revparse_single(&wanted).map(|o| o.id());
                match id(repo) {
                    Ok(oid) => oid,
                    Err(_) => {
                        connection
                            .remote()
                            .fetch(&ALL_BRANCHES, Some(&mut options), None)
                            .map_err(SourceError::git(format!("cannot fetch {shown}")))?;
                        did_fetch = true;
                        id(repo)
                            .map_err(SourceError::git(format!("`{wanted}` is not on {shown}")))?
                    }
                }
            }
            None => {
                return Err(SourceError::Git {
                    what: format!("`{wanted}` is not on {shown}"),
                    source: git2::Error::from_str("no such branch or tag (deleted?)"),
                });
            }
        };
        drop(connection);
        // An annotated tag peels to its commit.
        let commit = repo
            .find_object(target, None)
            .and_then(|o| o.peel_to_commit())
            .map_err(SourceError::git(format!(
                "`{wanted}` on {shown} is not a commit"
            )))?
            .id();
        drop(remote);
        if did_fetch {
            self.fetched += 1;
        } else {
            self.skipped += 1;
        }
        Ok(commit)
    }

    /// Whether the cache looks usable when opened afresh: HEAD and the object store exist and
    /// every ref's commit and tree can be read (cheap for a flags repository, and only asked
    /// after a failure).
    fn cache_is_sound(&mut self) -> bool {
        self.repo = None;
        let Ok(repo) = Repository::open_bare(&self.cache) else {
            return false;
        };
        if !repo.path().join("objects").is_dir() || repo.find_reference("HEAD").is_err() {
            return false;
        }
        let Ok(references) = repo.references() else {
            return false;
        };
        let sound = references.into_iter().all(|r| {
            r.and_then(|r| r.peel_to_commit())
                .and_then(|c| c.tree())
                .is_ok()
        });
        self.repo = Some(repo);
        sound
    }

    fn read_once(
        &mut self,
        known: Option<&str>,
        force: bool,
    ) -> Result<Option<Fetched>, SourceError> {
        let commit = self.fetch()?;
        let revision = commit.to_string();
        if !force && known == Some(revision.as_str()) {
            return Ok(None);
        }
        let flags_dir = self.options.flags_dir.clone();
        let repo = self.open_cache()?;
        let loaded = read_commit(repo, commit, &flags_dir)?;
        Ok(Some(Fetched { revision, loaded }))
    }

    fn read_unscrubbed(
        &mut self,
        known: Option<&str>,
        force: bool,
    ) -> Result<Option<Fetched>, SourceError> {
        match self.read_once(known, force) {
            Err(SourceError::Git { source, .. })
                if is_cache_damage(&source) || !self.cache_is_sound() =>
            {
                // The cache is unusable (not the remote): clone again, once.
                self.wipe()?;
                self.read_once(known, force)
            }
            other => other,
        }
    }
}

impl Source for RemoteSource {
    fn describe(&self) -> String {
        format!(
            "git remote {} at {}{}",
            redact(&self.url),
            self.options
                .reference
                .as_deref()
                .unwrap_or("its default branch"),
            flags_dir_suffix(&self.options.flags_dir)
        )
    }

    /// The interval while all is well; doubling from it up to `max_backoff` while failing;
    /// each varied by up to ±10 % so that replicas started together do not poll in step.
    fn next_poll(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.min(16);
        let wait = self
            .options
            .interval
            .saturating_mul(factor)
            .min(self.options.max_backoff.max(self.options.interval));
        wait.mul_f64(0.9 + 0.2 * fastrand::f64())
    }

    fn read(&mut self, known: Option<&str>, force: bool) -> Result<Option<Fetched>, SourceError> {
        self.read_unscrubbed(known, force)
            .map_err(|e| scrub_error(e, &self.secrets))
    }

    /// After a panic in `read`: the repository handle is dropped and the cache opened afresh
    /// next time (and cloned again if it cannot be opened).
    fn reset(&mut self) {
        self.repo = None;
    }

    fn served(&mut self, revision: &str) -> Result<(), String> {
        let commit = Oid::from_str(revision).map_err(|e| e.to_string())?;
        let key = self.served_key.clone();
        let cache = self.cache.clone();
        let repo = self.open_cache().map_err(|e| e.to_string())?;
        record_served(repo, &cache, &key, commit)
    }

    fn last_served(&mut self) -> Option<Result<Fetched, SourceError>> {
        let commit = served(&self.cache, &self.served_key)?;
        let flags_dir = self.options.flags_dir.clone();
        let read = self
            .open_cache()
            .and_then(|repo| read_commit(repo, commit, &flags_dir));
        Some(
            read.map(|loaded| Fetched {
                revision: commit.to_string(),
                loaded,
            })
            .map_err(|e| scrub_error(e, &self.secrets)),
        )
    }
}

/// Where a fetched remote ref is kept in the cache: branches as `refs/remotes/origin/*`, tags
/// as themselves.
fn tracking_ref(name: &str) -> String {
    match name.strip_prefix("refs/heads/") {
        Some(branch) => format!("refs/remotes/origin/{branch}"),
        None if name.starts_with("refs/") => name.to_owned(),
        None => format!("refs/remotes/origin/{name}"),
    }
}

/// Errors that can only come from the local object store (the remote's side shows up as
/// network, transport or repository errors, which must not cost the cache).
fn is_cache_damage(e: &git2::Error) -> bool {
    matches!(
        e.class(),
        ErrorClass::Odb | ErrorClass::Object | ErrorClass::Zlib | ErrorClass::Tree
    )
}

/// A `--ref` that names a commit, not a branch or tag: 7 to 40 hex digits (servers use it
/// to tell which pushes can move the ref).
pub fn looks_like_commit_id(s: &str) -> bool {
    (7..=40).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let mut options = super::RemoteOptions::new("/tmp/x");
        options.interval = std::time::Duration::from_secs(30);
        options.max_backoff = std::time::Duration::from_secs(300);
        let source = super::RemoteSource::new("/tmp/r", options);
        use super::Source as _;
        // Each wait is within ±10 % of the doubling sequence, and the waits vary.
        for (failures, expected) in [30.0, 60.0, 120.0, 240.0, 300.0, 300.0]
            .into_iter()
            .enumerate()
        {
            let waits: Vec<f64> = (0..200)
                .map(|_| source.next_poll(failures as u32).as_secs_f64())
                .collect();
            for w in &waits {
                assert!(
                    (expected * 0.9..=expected * 1.1).contains(w),
                    "{failures}: {w}"
                );
            }
            let spread = waits.iter().cloned().fold(f64::MIN, f64::max)
                - waits.iter().cloned().fold(f64::MAX, f64::min);
            assert!(
                spread > expected * 0.1,
                "{failures}: the waits hardly vary ({spread})"
            );
        }
    }

    /// A server that accepts and never answers: with the timeouts set, the fetch fails after
    /// about the read timeout instead of waiting forever.
    #[test]
    fn a_silent_server_fails_the_fetch_after_the_read_timeout() {
        use std::time::{Duration, Instant};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let serving = std::sync::Arc::clone(&done);
        // Accepts (and holds, silent) until the test ends or 60 s have passed.
        let server = std::thread::spawn(move || {
            let mut held = Vec::new();
            let end = Instant::now() + Duration::from_secs(60);
            while !serving.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < end {
                match listener.accept() {
                    Ok((socket, _)) => held.push(socket),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            held.len()
        });

        crate::source::set_git_timeouts(Duration::from_secs(1), Duration::from_secs(1)).unwrap();
        // Set once: the same values again are fine, others are refused.
        crate::source::set_git_timeouts(Duration::from_secs(1), Duration::from_secs(1)).unwrap();
        assert!(
            crate::source::set_git_timeouts(Duration::from_secs(2), Duration::from_secs(1))
                .is_err()
        );

        let cache = tempfile::tempdir().unwrap();
        let url = format!("git://127.0.0.1:{port}/flags.git");
        let mut source = super::RemoteSource::new(url, super::RemoteOptions::new(cache.path()));
        let started = Instant::now();
        let reader = std::thread::spawn(move || {
            use super::Source as _;
            source
                .read(None, true)
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        let deadline = started + Duration::from_secs(30);
        while !reader.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(reader.is_finished(), "the fetch still hangs after 30 s");
        let err = reader.join().unwrap().unwrap_err();
        assert!(
            err.contains("could not read from socket: timed out"),
            "{err}"
        );
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(server.join().unwrap() >= 1, "the fetch reached the server");
    }

    /// What a process killed during a fetch leaves in the cache is removed when a new
    /// `RemoteSource` first opens it, and nothing else is.
    #[test]
    fn stale_temporary_files_are_removed_at_the_first_opening() {
        use super::Source as _;
        let origin = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(origin.path()).unwrap();
        let commit = |text: &str| -> git2::Oid {
            let blob = repo.blob(text.as_bytes()).unwrap();
            let mut tree = repo.treebuilder(None).unwrap();
            tree.insert("a.yaml", blob, 0o100_644).unwrap();
            let tree = repo.find_tree(tree.write().unwrap()).unwrap();
            let who = git2::Signature::now("t", "t@example.com").unwrap();
            let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
            let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
            repo.commit(Some("HEAD"), &who, &who, text, &tree, &parents)
                .unwrap()
        };
        commit("flags: {}\n");
        let url = format!("file://{}", origin.path().display());
        let caches = tempfile::tempdir().unwrap();
        let options = super::RemoteOptions::new(caches.path());
        let mut first = super::RemoteSource::new(url.clone(), options.clone());
        assert!(first.read(None, true).unwrap().is_some());
        let cache = first.cache_path().to_owned();
        drop(first);

        // As a SIGKILL mid-fetch would leave them (names as libgit2 1.9 makes them).
        let branch = repo.head().unwrap().shorthand().unwrap().to_owned();
        let stale = [
            "objects/pack/pack_git2_0123456789abcdef".to_owned(),
            "objects/pack/pack_git2_0123456789abidx.lock".to_owned(),
            "objects/tmp_object_git2_fedcba9876543210".to_owned(),
            "FETCH_HEAD.lock".to_owned(),
            "packed-refs.lock".to_owned(),
            format!("refs/remotes/origin/{branch}.lock"),
        ];
        // Look alike, but are not libgit2's temporary names: kept.
        let kept = [
            "objects/pack/pack_git2_notes",
            "objects/pack/pack_git2_0123456789ABCDEF",
            "objects/tmp_object_git2_short",
            "description.lock.txt",
        ];
        for name in stale.iter().map(String::as_str).chain(kept) {
            let path = cache.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, vec![0u8; 4096]).unwrap();
        }
        let next = commit("flags: {}\n# two\n");

        let mut second = super::RemoteSource::new(url, options);
        let fetched = second.read(None, false).unwrap().unwrap();
        assert_eq!(fetched.revision, next.to_string());
        for name in &stale {
            assert!(!cache.join(name).exists(), "{name} is still there");
        }
        for name in kept {
            assert!(cache.join(name).exists(), "{name} was removed");
        }
    }
}
