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
    /// A fetch still transferring after this long is abandoned (and retried later). libgit2
    /// offers no connect timeout without `unsafe` settings, so a remote that never answers
    /// the connection is bounded only by the operating system's TCP timeout.
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

pub struct RemoteSource {
    url: String,
    options: RemoteOptions,
    cache: PathBuf,
    repo: Option<Repository>,
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
        }
    }

    /// The cache repository of this URL.
    pub fn cache_path(&self) -> &Path {
        &self.cache
    }

    fn open_cache(&mut self) -> Result<&Repository, SourceError> {
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

    #[test]
    fn cache_names_differ_per_url() {
        let a = super::cache_name("file:///srv/flags");
        let b = super::cache_name("file:///srv/Flags");
        assert!(a.starts_with("flags-"), "{a}");
        assert_ne!(a, b);
    }
}
