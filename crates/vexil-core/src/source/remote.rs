//! A remote git repository: fetched into a bare cache repository, then read like a local one.
//!
//! Every fetch asks the remote for its refs, so a force-push is just a new commit id and a
//! deleted ref is an error (the last good snapshot keeps serving). A cache that git cannot use
//! (damaged objects, a broken config) is removed and cloned again.
//!
//! Transports: local paths and `file://` always; `https://` and `ssh://` when built with the
//! `git-https` feature (which needs OpenSSL). Credentials come from `Credentials` (the
//! environment or files), never from the URL on a command line.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use git2::{AutotagOption, Cred, CredentialType, FetchOptions, FetchPrune, Oid, RemoteCallbacks};
use git2::{ErrorClass, Repository};
use sha2::{Digest as _, Sha256};

use super::git::{flags_dir_suffix, read_commit};
use super::{Fetched, Source, SourceError};

/// Branches and tags are mirrored into the cache under these names; `+` accepts force-pushes.
const REFSPECS: [&str; 2] = [
    "+refs/heads/*:refs/remotes/origin/*",
    "+refs/tags/*:refs/tags/*",
];

#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// A branch, tag or commit id; `None` follows the remote's default branch (its `HEAD`).
    pub reference: Option<String>,
    /// The flags root inside the repository (`""` for the top).
    pub flags_dir: String,
    /// Where clones are kept (one sub-directory per URL).
    pub cache_dir: PathBuf,
    /// How often to fetch.
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

/// Credentials for fetching; `Debug` never prints secrets.
#[derive(Clone, Default)]
pub struct Credentials {
    pub username: Option<String>,
    /// A password or an access token (with GitHub, the username is then `x-access-token`).
    pub password: Option<String>,
    /// A private key file for ssh; without one, the ssh agent is asked.
    pub ssh_key: Option<PathBuf>,
    pub ssh_passphrase: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ssh_key", &self.ssh_key)
            .field(
                "ssh_passphrase",
                &self.ssh_passphrase.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Credentials {
    /// Reads `VEXIL_GIT_USERNAME`, `VEXIL_GIT_PASSWORD` (or `VEXIL_GIT_PASSWORD_FILE`),
    /// `VEXIL_GIT_SSH_KEY` and `VEXIL_GIT_SSH_PASSPHRASE` (or `VEXIL_GIT_SSH_PASSPHRASE_FILE`).
    pub fn from_env() -> Result<Credentials, SourceError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let secret = |name: &str| -> Result<Option<String>, SourceError> {
            if let Some(value) = var(name) {
                return Ok(Some(value));
            }
            let file_var = format!("{name}_FILE");
            match var(&file_var) {
                Some(path) => std::fs::read_to_string(&path)
                    .map(|s| Some(s.trim_end_matches(['\r', '\n']).to_owned()))
                    .map_err(|e| {
                        SourceError::Credentials(format!("cannot read {file_var} ({path}): {e}"))
                    }),
                None => Ok(None),
            }
        };
        Ok(Credentials {
            username: var("VEXIL_GIT_USERNAME"),
            password: secret("VEXIL_GIT_PASSWORD")?,
            ssh_key: var("VEXIL_GIT_SSH_KEY").map(PathBuf::from),
            ssh_passphrase: secret("VEXIL_GIT_SSH_PASSPHRASE")?,
        })
    }
}

/// libgit2's socket timeouts, and whether a network fetch has begun. The timeouts are C globals
/// that libgit2 reads, without synchronisation, whenever it opens a socket: they are written
/// at most once, under this lock, and only before any fetch of ours has marked the network as
/// used (under the same lock, before it opens a socket). Only this crate uses libgit2.
static NETWORK: Mutex<Network> = Mutex::new(Network {
    used: false,
    timeouts: None,
});

#[derive(Debug)]
struct Network {
    used: bool,
    timeouts: Option<(Duration, Duration)>,
}

/// Sets the connect timeout and the read timeout (the longest wait for data while reading) of
/// every remote git connection, for the whole process. Call it once at start-up, before any
/// source is read: it fails once a network fetch has begun, and a second call with other
/// values fails (the same values again are accepted). Without it, a server that accepts the
/// connection and never answers holds a fetch forever.
///
/// Durations are clamped to 1 ms ..= `i32::MAX` ms (libgit2 takes a C `int`); zero is not "no
/// timeout": libgit2 would then read its non-blocking socket without waiting, and fail.
pub fn set_git_timeouts(connect: Duration, read: Duration) -> Result<(), SourceError> {
    let mut network = NETWORK.lock().unwrap_or_else(PoisonError::into_inner);
    match network.timeouts {
        Some(set) if set == (connect, read) => return Ok(()),
        Some((c, r)) => {
            return Err(SourceError::Settings(format!(
                "the git timeouts are already set (connect {c:?}, read {r:?}): they are set once per process"
            )));
        }
        None => {}
    }
    if network.used {
        return Err(SourceError::Settings(
            "the git timeouts must be set before the first remote fetch".into(),
        ));
    }
    let millis = |d: Duration| -> std::ffi::c_int {
        std::ffi::c_int::try_from(d.as_millis())
            .unwrap_or(std::ffi::c_int::MAX)
            .max(1)
    };
    #[allow(unsafe_code)]
    // SAFETY: these two calls write two plain C `int`s in libgit2 (its socket streams' connect
    // and read timeouts), without synchronisation; git2 marks them unsafe because a libgit2
    // call opening a socket on another thread at the same moment would read them in a data
    // race. None can: only this crate calls libgit2, only `RemoteSource::fetch` opens sockets,
    // and it marks `NETWORK.used` under the lock held here before it starts; `used` is false,
    // so no fetch has begun, and none can begin until the lock is released. The values are
    // in range (positive `c_int`s), so libgit2 accepts them.
    let set = unsafe {
        git2::opts::set_server_connect_timeout_in_milliseconds(millis(connect))
            .and_then(|()| git2::opts::set_server_timeout_in_milliseconds(millis(read)))
    };
    set.map_err(SourceError::git("cannot set the git network timeouts"))?;
    network.timeouts = Some((connect, read));
    Ok(())
}

/// Marks the network as used before a fetch from `url` opens a socket (see `NETWORK`). Local
/// paths and `file://` URLs, which libgit2 reads without a socket, leave it unmarked.
fn mark_network_use(url: &str) {
    if url.starts_with("file://") || Path::new(url).exists() {
        return;
    }
    NETWORK.lock().unwrap_or_else(PoisonError::into_inner).used = true;
}

pub struct RemoteSource {
    url: String,
    options: RemoteOptions,
    cache: PathBuf,
    repo: Option<Repository>,
    /// Whether stale temporary files were looked for in the cache (once, at its first opening).
    swept: bool,
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
        RemoteSource {
            url,
            options,
            cache,
            repo: None,
            swept: false,
        }
    }

    /// The cache repository of this URL.
    pub fn cache_path(&self) -> &Path {
        &self.cache
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
            Err(e) => Err(SourceError::Root {
                path: self.cache.clone(),
                source: e,
            }),
        }
    }

    /// Fetches, then returns the commit the reference names on the remote now.
    fn fetch(&mut self) -> Result<Oid, SourceError> {
        let url = self.url.clone();
        let reference = self.options.reference.clone();
        let credentials = self.options.credentials.clone();
        let deadline = std::time::Instant::now() + self.options.fetch_timeout;
        let shown = redact(&url);
        mark_network_use(&url);
        let repo = self.open_cache()?;
        let mut remote = repo
            .remote_anonymous(&url)
            .map_err(SourceError::git(format!("invalid remote {shown}")))?;
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(callbacks(credentials, deadline))
            .prune(FetchPrune::On)
            .download_tags(AutotagOption::None);
        remote
            .fetch(&REFSPECS, Some(&mut options), None)
            .map_err(SourceError::git(format!("cannot fetch {shown}")))?;
        // What the remote advertised during this fetch: deleted refs are gone from it.
        let advertised: Vec<(String, Oid)> = remote
            .list()
            .map_err(SourceError::git(format!("cannot list the refs of {shown}")))?
            .iter()
            .map(|head| (head.name().to_owned(), head.oid()))
            .collect();
        let wanted = reference.as_deref().unwrap_or("HEAD");
        let candidates = [
            wanted.to_owned(),
            format!("refs/heads/{wanted}"),
            format!("refs/tags/{wanted}"),
        ];
        let found = candidates
            .iter()
            .find_map(|c| advertised.iter().find(|(name, _)| name == c))
            .map(|(_, oid)| *oid);
        let target = match found {
            Some(oid) => oid,
            // A commit id is not advertised; it is found among the fetched objects.
            None if looks_like_commit_id(wanted) => repo
                .revparse_single(wanted)
                .map(|o| o.id())
                .map_err(SourceError::git(format!("`{wanted}` is not on {shown}")))?,
            None => {
                return Err(SourceError::Git {
                    what: format!("`{wanted}` is not on {shown}"),
                    source: git2::Error::from_str("no such branch or tag (deleted?)"),
                });
            }
        };
        // An annotated tag peels to its commit.
        let commit = repo
            .find_object(target, None)
            .and_then(|o| o.peel_to_commit())
            .map_err(SourceError::git(format!(
                "`{wanted}` on {shown} is not a commit"
            )))?;
        Ok(commit.id())
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

    /// The interval while all is well; doubling from it up to `max_backoff` while failing.
    fn next_poll(&self, failures: u32) -> Duration {
        if failures == 0 {
            return self.options.interval;
        }
        let factor = 1u32 << failures.min(16);
        self.options
            .interval
            .saturating_mul(factor)
            .min(self.options.max_backoff.max(self.options.interval))
    }

    fn read(&mut self, known: Option<&str>, force: bool) -> Result<Option<Fetched>, SourceError> {
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

    /// After a panic in `read`: the repository handle is dropped and the cache opened afresh
    /// next time (and cloned again if it cannot be opened).
    fn reset(&mut self) {
        self.repo = None;
    }
}

/// Removes what libgit2 leaves in a cache when a process dies while writing (a SIGKILL during
/// a fetch), which nothing else ever removes: the pack being received
/// (`objects/pack/pack_git2_<16 hex digits>`, as large as the download) and the lock of its
/// index (`objects/pack/pack_git2_<12 hex digits>idx.lock`), a loose object being written
/// (`objects/tmp_object_git2_<16 hex digits>`), and the locks of files being updated
/// (`*.lock` under `refs/`, `packed-refs.lock`, `FETCH_HEAD.lock`, `HEAD.lock`,
/// `config.lock`), which would make every later fetch fail to update them. Names are from
/// libgit2 1.9 (`git_futils_mktmp`, `git_filebuf`). Only these names, only in this cache; a
/// cache directory belongs to one process (another's fetch in progress would lose its files).
fn remove_stale_temporaries(cache: &Path) {
    let mut stale = Vec::new();
    let names = |dir: &Path| -> Vec<(String, PathBuf)> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok().map(|n| (n, e.path())))
            .collect()
    };
    for (name, path) in names(&cache.join("objects/pack")) {
        let temp = name.strip_prefix("pack_git2_").is_some_and(|rest| {
            is_hex(rest, 16) || rest.strip_suffix("idx.lock").is_some_and(|h| is_hex(h, 12))
        });
        if temp {
            stale.push(path);
        }
    }
    for (name, path) in names(&cache.join("objects")) {
        if name
            .strip_prefix("tmp_object_git2_")
            .is_some_and(|h| is_hex(h, 16))
        {
            stale.push(path);
        }
    }
    for (name, path) in names(cache) {
        if [
            "packed-refs.lock",
            "FETCH_HEAD.lock",
            "HEAD.lock",
            "config.lock",
        ]
        .contains(&name.as_str())
        {
            stale.push(path);
        }
    }
    // Refs nest (`refs/remotes/origin/team/x`); git refuses ref names this deep long before.
    let mut dirs = vec![(cache.join("refs"), 0usize)];
    while let Some((dir, depth)) = dirs.pop() {
        for (name, path) in names(&dir) {
            let Ok(kind) = std::fs::symlink_metadata(&path).map(|m| m.file_type()) else {
                continue;
            };
            if kind.is_dir() && depth < 64 {
                dirs.push((path, depth + 1));
            } else if kind.is_file() && name.ends_with(".lock") {
                stale.push(path);
            }
        }
    }
    for path in stale {
        // Best effort: a file that cannot be removed stays, as it would have without this.
        let _ = std::fs::remove_file(path);
    }
}

/// `s` is exactly `len` lower-case hex digits (libgit2's random suffixes).
fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Errors that can only come from the local object store (the remote's side shows up as
/// network, transport or repository errors, which must not cost the cache).
fn is_cache_damage(e: &git2::Error) -> bool {
    matches!(
        e.class(),
        ErrorClass::Odb | ErrorClass::Object | ErrorClass::Zlib | ErrorClass::Tree
    )
}

fn looks_like_commit_id(s: &str) -> bool {
    (7..=40).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn callbacks(credentials: Credentials, deadline: std::time::Instant) -> RemoteCallbacks<'static> {
    let mut callbacks = RemoteCallbacks::new();
    // Returning false from a progress callback aborts the transfer.
    callbacks.transfer_progress(move |_| std::time::Instant::now() < deadline);
    callbacks.sideband_progress(move |_| std::time::Instant::now() < deadline);
    let mut attempts = 0u32;
    callbacks.credentials(move |_url, username_from_url, allowed| {
        // libgit2 asks again after a rejection; give up instead of looping.
        attempts += 1;
        if attempts > 3 {
            return Err(git2::Error::from_str(
                "authentication failed: check VEXIL_GIT_USERNAME / VEXIL_GIT_PASSWORD / VEXIL_GIT_SSH_KEY",
            ));
        }
        let user = username_from_url
            .or(credentials.username.as_deref())
            .unwrap_or("git");
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            if let (Some(u), Some(p)) = (&credentials.username, &credentials.password) {
                return Cred::userpass_plaintext(u, p);
            }
            if let Some(p) = &credentials.password {
                return Cred::userpass_plaintext(user, p);
            }
        }
        if allowed.contains(CredentialType::SSH_KEY) {
            return match &credentials.ssh_key {
                Some(key) => Cred::ssh_key(user, None, key, credentials.ssh_passphrase.as_deref()),
                None => Cred::ssh_key_from_agent(user),
            };
        }
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(user);
        }
        Err(git2::Error::from_str(
            "the remote asks for credentials and none are configured (VEXIL_GIT_USERNAME, VEXIL_GIT_PASSWORD, VEXIL_GIT_SSH_KEY)",
        ))
    });
    callbacks
}

/// One cache directory per URL: a readable stem and a hash (URLs may differ only in case).
fn cache_name(url: &str) -> String {
    let stem: String = redact(url)
        .rsplit(['/', ':'])
        .find(|s| !s.is_empty())
        .unwrap_or("repo")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(40)
        .collect();
    let digest = Sha256::digest(url.as_bytes());
    let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{stem}-{hash}")
}

/// The URL without a password or token in its user part, for logs and status.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{path}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_user_info() {
        assert_eq!(
            super::redact("https://u:secret@example.com/a/b.git"),
            "https://***@example.com/a/b.git"
        );
        assert_eq!(
            super::redact("https://example.com/a@b"),
            "https://example.com/a@b"
        );
        assert_eq!(super::redact("/srv/flags.git"), "/srv/flags.git");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut options = super::RemoteOptions::new("/tmp/x");
        options.interval = std::time::Duration::from_secs(30);
        options.max_backoff = std::time::Duration::from_secs(300);
        let source = super::RemoteSource::new("/tmp/r", options);
        use super::Source as _;
        let secs: Vec<u64> = (0..6).map(|f| source.next_poll(f).as_secs()).collect();
        assert_eq!(secs, [30, 60, 120, 240, 300, 300]);
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

        super::set_git_timeouts(Duration::from_secs(1), Duration::from_secs(1)).unwrap();
        // Set once: the same values again are fine, others are refused.
        super::set_git_timeouts(Duration::from_secs(1), Duration::from_secs(1)).unwrap();
        assert!(super::set_git_timeouts(Duration::from_secs(2), Duration::from_secs(1)).is_err());

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

    #[test]
    fn cache_names_differ_per_url() {
        let a = super::cache_name("file:///srv/flags");
        let b = super::cache_name("file:///srv/Flags");
        assert!(a.starts_with("flags-"), "{a}");
        assert_ne!(a, b);
    }
}
