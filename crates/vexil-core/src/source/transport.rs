//! What every remote fetch shares: credentials, libgit2's process-wide network settings (socket
//! timeouts, a private CA), the callbacks of a connection (credentials, ssh host keys, the
//! transfer deadline), and keeping secrets out of every text a fetch produces.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use git2::{CertificateCheckStatus, Cred, CredentialType, ErrorClass, ErrorCode, RemoteCallbacks};

use super::SourceError;
use super::known_hosts::KnownHosts;

/// Credentials for fetching; `Debug` never prints secrets.
#[derive(Clone, Default)]
pub struct Credentials {
    pub username: Option<String>,
    /// A password or an access token (with GitHub, the username is then `x-access-token`).
    pub password: Option<String>,
    /// A private key file for ssh (ed25519, ecdsa or RSA); without one, the ssh agent is asked.
    pub ssh_key: Option<PathBuf>,
    pub ssh_passphrase: Option<String>,
    /// The known_hosts file ssh host keys are checked against (default: `~/.ssh/known_hosts`).
    /// It is read at every connection, so a mounted file can change without a restart.
    pub known_hosts: Option<PathBuf>,
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
            .field("known_hosts", &self.known_hosts)
            .finish()
    }
}

impl Credentials {
    /// Reads `VEXIL_GIT_USERNAME`, `VEXIL_GIT_PASSWORD` (or `VEXIL_GIT_PASSWORD_FILE`),
    /// `VEXIL_GIT_SSH_KEY`, `VEXIL_GIT_SSH_PASSPHRASE` (or `VEXIL_GIT_SSH_PASSPHRASE_FILE`) and
    /// `VEXIL_GIT_KNOWN_HOSTS`. Files named must exist (a typo is an error now, not a refused
    /// connection later).
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
        let file = |name: &str| -> Result<Option<PathBuf>, SourceError> {
            let Some(path) = var(name) else {
                return Ok(None);
            };
            std::fs::metadata(&path).map_err(|e| {
                SourceError::Credentials(format!("cannot read {name} ({path}): {e}"))
            })?;
            Ok(Some(PathBuf::from(path)))
        };
        Ok(Credentials {
            username: var("VEXIL_GIT_USERNAME"),
            password: secret("VEXIL_GIT_PASSWORD")?,
            ssh_key: file("VEXIL_GIT_SSH_KEY")?,
            ssh_passphrase: secret("VEXIL_GIT_SSH_PASSPHRASE")?,
            known_hosts: file("VEXIL_GIT_KNOWN_HOSTS")?,
        })
    }
}

/// libgit2's process-wide network settings, and whether a network fetch has begun. They are C
/// globals that libgit2 reads, without synchronisation, whenever it opens a connection: they
/// are written at most once each, under this lock, and only before any fetch of ours has
/// marked the network as used (under the same lock, before it opens a socket). Only this crate
/// uses libgit2.
static NETWORK: Mutex<Network> = Mutex::new(Network {
    used: false,
    timeouts: None,
    ca_file: None,
});

#[derive(Debug)]
struct Network {
    used: bool,
    timeouts: Option<(Duration, Duration)>,
    ca_file: Option<PathBuf>,
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

/// Trusts the certificates of a PEM bundle for `https://` remotes, in addition to the system's
/// roots (a private CA), for the whole process. Like `set_git_timeouts`: once, at start-up,
/// before any fetch. A file that cannot be read or holds no PEM certificate is an error.
pub fn set_git_ca_file(path: &Path) -> Result<(), SourceError> {
    let shown = path.display();
    let text = std::fs::read(path)
        .map_err(|e| SourceError::Settings(format!("cannot read the git CA file {shown}: {e}")))?;
    if !text
        .windows(27)
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(SourceError::Settings(format!(
            "the git CA file {shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        )));
    }
    let mut network = NETWORK.lock().unwrap_or_else(PoisonError::into_inner);
    match &network.ca_file {
        Some(set) if set == path => return Ok(()),
        Some(set) => {
            return Err(SourceError::Settings(format!(
                "the git CA file is already set ({}): it is set once per process",
                set.display()
            )));
        }
        None => {}
    }
    if network.used {
        return Err(SourceError::Settings(
            "the git CA file must be set before the first remote fetch".into(),
        ));
    }
    #[allow(unsafe_code)]
    // SAFETY: this loads the file into libgit2's global OpenSSL context (added to the default
    // roots, which stay). git2 marks it unsafe because a connection being opened on another
    // thread at the same moment would use that context in a data race. None can: as in
    // `set_git_timeouts`, no fetch has begun (`used` is false under the lock held here) and
    // none can begin until it is released.
    let set = unsafe { git2::opts::set_ssl_cert_file(path) };
    set.map_err(SourceError::git(format!(
        "cannot load the git CA file {shown}"
    )))?;
    network.ca_file = Some(path.to_owned());
    Ok(())
}

/// Marks the network as used before a fetch from `url` opens a socket (see `NETWORK`). Local
/// paths and `file://` URLs, which libgit2 reads without a socket, leave it unmarked.
pub(super) fn mark_network_use(url: &str) {
    if is_local(url) {
        return;
    }
    NETWORK.lock().unwrap_or_else(PoisonError::into_inner).used = true;
}

/// A path or `file://` URL: read by libgit2's local transport (which cannot fetch shallow).
pub(super) fn is_local(url: &str) -> bool {
    url.starts_with("file://") || Path::new(url).exists()
}

/// Host and port of an ssh URL (`ssh://[user@]host[:port]/path`, or scp-like
/// `[user@]host:path`), for the known_hosts lookup; `None` for other URLs.
pub(super) fn ssh_endpoint(url: &str) -> Option<(String, u16)> {
    let authority = match url.split_once("://") {
        Some((scheme, rest)) => {
            if !matches!(scheme, "ssh" | "git+ssh" | "ssh+git") {
                return None;
            }
            rest.split('/').next().unwrap_or(rest)
        }
        None => {
            // scp-like: `host:path` with a user part or at least no slash before the colon.
            let (authority, _) = url.split_once(':')?;
            if authority.contains('/') {
                return None;
            }
            return Some((authority.rsplit('@').next()?.to_owned(), 22));
        }
    };
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    if let Some(rest) = host_port.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return Some((host.to_owned(), port.unwrap_or(22)));
    }
    match host_port.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), port.parse().ok()?)),
        None => Some((host_port.to_owned(), 22)),
    }
}

/// Why the host key check refused a connection. libgit2 replaces the callback's error with
/// "invalid or unknown remote ssh hostkey", so the reason travels beside it.
#[derive(Debug, Clone, Default)]
pub(super) struct HostKeyRefusal(Arc<Mutex<Option<String>>>);

impl HostKeyRefusal {
    fn set(&self, reason: &str) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason.to_owned());
    }

    /// The error of a refused connection with the reason restored (others unchanged).
    pub(super) fn explain(&self, error: git2::Error) -> git2::Error {
        match self.0.lock().unwrap_or_else(PoisonError::into_inner).take() {
            Some(reason) => git2::Error::new(error.code(), error.class(), reason),
            None => error,
        }
    }
}

/// The callbacks of one connection to `url`: credentials (at most three offers), ssh host keys
/// checked against known_hosts (a refusal's reason kept in `refusal`), and a transfer still
/// running at `deadline` abandoned.
pub(super) fn callbacks(
    url: &str,
    credentials: &Credentials,
    deadline: Instant,
    refusal: &HostKeyRefusal,
) -> RemoteCallbacks<'static> {
    let mut callbacks = RemoteCallbacks::new();
    // Returning false from a progress callback aborts the transfer.
    callbacks.transfer_progress(move |_| Instant::now() < deadline);
    callbacks.sideband_progress(move |_| Instant::now() < deadline);
    let endpoint = ssh_endpoint(url);
    let known_hosts = credentials.known_hosts.clone();
    let refusal = refusal.clone();
    callbacks.certificate_check(move |cert, hostname| {
        // TLS: OpenSSL's verdict (the system's roots and any `set_git_ca_file`).
        let Some(hostkey) = cert.as_hostkey() else {
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let refuse = |message: String| {
            refusal.set(&message);
            git2::Error::new(ErrorCode::Certificate, ErrorClass::Ssh, message)
        };
        let key = hostkey
            .hostkey()
            .ok_or_else(|| refuse("the ssh server's host key is not available to check".into()))?;
        let (host, port) = endpoint.clone().unwrap_or_else(|| (hostname.to_owned(), 22));
        let file = match &known_hosts {
            Some(file) => file.clone(),
            None => match std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".ssh/known_hosts")) {
                Some(file) if file.is_file() => file,
                _ => {
                    return Err(refuse(format!(
                        "cannot check the ssh host key of {host}: no known_hosts file (set VEXIL_GIT_KNOWN_HOSTS to a file that lists it); host keys are never accepted unchecked"
                    )));
                }
            },
        };
        let hosts = KnownHosts::read(&file).map_err(refuse)?;
        hosts
            .check(&host, port, key, &file.display().to_string())
            .map(|()| CertificateCheckStatus::CertificateOk)
            .map_err(refuse)
    });
    let mut attempts = 0u32;
    let credentials = credentials.clone();
    let url_password = url_password(url);
    callbacks.credentials(move |_url, username_from_url, allowed| {
        // libgit2 asks again after a rejection; give up instead of looping.
        attempts += 1;
        if attempts > 3 {
            return Err(git2::Error::from_str(
                "authentication failed: the remote refused the credentials (VEXIL_GIT_USERNAME / VEXIL_GIT_PASSWORD / VEXIL_GIT_SSH_KEY)",
            ));
        }
        let user = username_from_url
            .or(credentials.username.as_deref())
            .unwrap_or("git");
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            let password = credentials.password.as_deref().or(url_password.as_deref());
            if let Some(p) = password {
                let u = credentials.username.as_deref().unwrap_or(user);
                return Cred::userpass_plaintext(u, p);
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

/// The user part of a URL's authority (`user:password` in `https://user:password@host/`).
fn user_info(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = rest.get(..authority_end)?;
    authority.rsplit_once('@').map(|(user, _)| user)
}

/// The password of a URL's user part, percent-decoded.
fn url_password(url: &str) -> Option<String> {
    let (_, password) = user_info(url)?.split_once(':')?;
    (!password.is_empty()).then(|| percent_decode(password))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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

/// The secrets a fetch from `url` knows: the URL's user part and password (raw and decoded),
/// the password and the key's passphrase.
pub(super) fn secrets(url: &str, credentials: &Credentials) -> Vec<String> {
    let mut secrets: Vec<String> = Vec::new();
    // A user name alone is no secret (and would be replaced in unrelated words).
    if let Some(info) = user_info(url).filter(|i| i.contains(':')) {
        secrets.push(info.to_owned());
        if let Some((_, password)) = info.split_once(':') {
            secrets.push(password.to_owned());
            secrets.push(percent_decode(password));
        }
    }
    secrets.extend(credentials.password.clone());
    secrets.extend(credentials.ssh_passphrase.clone());
    // Longest first, so that a secret containing another is replaced whole.
    secrets.retain(|s| s.len() >= 3);
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
}

/// `text` with every secret replaced by `***` (libgit2 builds some messages from the URL).
pub(super) fn scrub(text: &str, secrets: &[String]) -> String {
    secrets.iter().fold(text.to_owned(), |text, secret| {
        text.replace(secret.as_str(), "***")
    })
}

/// An error of a fetch with every secret replaced (see `scrub`).
pub(super) fn scrub_error(error: SourceError, secrets: &[String]) -> SourceError {
    if secrets.is_empty() {
        return error;
    }
    match error {
        SourceError::Git { what, source } => SourceError::Git {
            what: scrub(&what, secrets),
            source: git2::Error::new(
                source.code(),
                source.class(),
                scrub(source.message(), secrets),
            ),
        },
        SourceError::Credentials(m) => SourceError::Credentials(scrub(&m, secrets)),
        SourceError::Settings(m) => SourceError::Settings(scrub(&m, secrets)),
        other => other,
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
    fn scrubs_every_form_of_the_secrets() {
        let credentials = super::Credentials {
            password: Some("env-token".into()),
            ssh_passphrase: Some("phrase-1".into()),
            ..super::Credentials::default()
        };
        let url = "https://bot:p%40ss-w0rd@git.example.com/flags.git";
        let secrets = super::secrets(url, &credentials);
        let text = "fetch https://bot:p%40ss-w0rd@git.example.com: p@ss-w0rd env-token phrase-1";
        let scrubbed = super::scrub(text, &secrets);
        assert_eq!(scrubbed, "fetch https://***@git.example.com: *** *** ***");
        assert_eq!(super::url_password(url).as_deref(), Some("p@ss-w0rd"));
    }

    #[test]
    fn ssh_endpoints() {
        let e = |u: &str| super::ssh_endpoint(u);
        assert_eq!(
            e("ssh://git@127.0.0.1:2222/srv/flags.git"),
            Some(("127.0.0.1".into(), 2222))
        );
        assert_eq!(e("ssh://host/flags.git"), Some(("host".into(), 22)));
        assert_eq!(e("ssh://git@[::1]:2200/x"), Some(("::1".into(), 2200)));
        assert_eq!(
            e("git@github.com:acme/flags.git"),
            Some(("github.com".into(), 22))
        );
        assert_eq!(e("https://github.com/acme/flags.git"), None);
        assert_eq!(e("/srv/flags.git"), None);
    }
}
