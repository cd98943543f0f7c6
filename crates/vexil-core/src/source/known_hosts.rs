//! ssh host key checks against an OpenSSH known_hosts file (`VEXIL_GIT_KNOWN_HOSTS`).
//!
//! libgit2 hands over the server's raw public key (the ssh wire blob, which is exactly what a
//! known_hosts line holds in base64). A key is accepted only when a line names the host (plain,
//! wildcard or hashed `|1|salt|hash` patterns, `[host]:port` for ports other than 22, `!`
//! negations) with the same key blob, and no `@revoked` line names that key. Anything else is
//! refused with the host, the key's SHA256 fingerprint and what the file holds for the host:
//! an unknown or changed host key is never accepted silently. `@cert-authority` lines are
//! ignored (libssh2 does not verify host certificates): such a host is unknown.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use sha2::{Digest as _, Sha256};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

#[derive(Debug, Clone)]
struct Line {
    marker: Marker,
    patterns: Vec<String>,
    key_type: String,
    key: Vec<u8>,
}

/// The parsed lines of a known_hosts file; lines that cannot be read are skipped, as ssh does.
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    lines: Vec<Line>,
}

impl KnownHosts {
    pub fn read(path: &Path) -> Result<KnownHosts, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the known_hosts file {}: {e}", path.display()))?;
        Ok(KnownHosts::parse(&text))
    }

    pub fn parse(text: &str) -> KnownHosts {
        let lines = text.lines().filter_map(parse_line).collect();
        KnownHosts { lines }
    }

    /// Checks the key `key` (the ssh wire blob) offered by `host` on `port`. `file` names the
    /// file in messages.
    pub fn check(&self, host: &str, port: u16, key: &[u8], file: &str) -> Result<(), String> {
        let name = if port == 22 {
            host.to_owned()
        } else {
            format!("[{host}]:{port}")
        };
        let offered = describe_key(key);
        let revoked = self
            .lines
            .iter()
            .any(|l| l.marker == Marker::Revoked && l.key == key && matches_host(l, &name));
        if revoked {
            return Err(format!(
                "the ssh host key of {name} ({offered}) is marked @revoked in {file}: refusing to connect"
            ));
        }
        let known: Vec<&Line> = self
            .lines
            .iter()
            .filter(|l| l.marker == Marker::None && matches_host(l, &name))
            .collect();
        if known.iter().any(|l| l.key == key) {
            return Ok(());
        }
        if known.is_empty() {
            return Err(format!(
                "the ssh host key of {name} ({offered}) is unknown: {file} has no key for {name}; refusing to connect (check the fingerprint with the host's owner, then add the line `ssh-keyscan{} {host}` prints)",
                if port == 22 {
                    String::new()
                } else {
                    format!(" -p {port}")
                }
            ));
        }
        let listed: Vec<String> = known.iter().map(|l| describe_key(&l.key)).collect();
        let key_type = key_type(key).unwrap_or_default();
        let same_type = known.iter().any(|l| l.key_type == key_type);
        let what = if same_type {
            "has CHANGED (someone may be intercepting the connection, or the host key was replaced)"
        } else {
            "is not one known_hosts lists"
        };
        Err(format!(
            "the ssh host key of {name} {what}: the server offers {offered}, {file} has {}; refusing to connect",
            listed.join(", ")
        ))
    }
}

fn parse_line(line: &str) -> Option<Line> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields = line.split_whitespace();
    let mut first = fields.next()?;
    let marker = match first {
        "@revoked" => Marker::Revoked,
        "@cert-authority" => Marker::CertAuthority,
        _ => Marker::None,
    };
    if marker != Marker::None {
        first = fields.next()?;
    }
    let patterns = first.split(',').map(str::to_owned).collect();
    let key_type = fields.next()?.to_owned();
    let key = STANDARD.decode(fields.next()?).ok()?;
    Some(Line {
        marker,
        patterns,
        key_type,
        key,
    })
}

/// `key type` and `SHA256:<base64>` of a wire blob, as `ssh-keygen -l` shows them.
pub fn describe_key(key: &[u8]) -> String {
    let digest = Sha256::digest(key);
    format!(
        "{} SHA256:{}",
        key_type(key).unwrap_or_else(|| "unknown-type".into()),
        STANDARD_NO_PAD.encode(digest)
    )
}

/// The key type named at the start of an ssh wire blob (a length-prefixed string).
fn key_type(key: &[u8]) -> Option<String> {
    let len = u32::from_be_bytes(key.get(..4)?.try_into().ok()?) as usize;
    let name = key.get(4..4usize.checked_add(len)?)?;
    std::str::from_utf8(name).ok().map(str::to_owned)
}

fn matches_host(line: &Line, name: &str) -> bool {
    let mut matched = false;
    for pattern in &line.patterns {
        if let Some(negated) = pattern.strip_prefix('!') {
            if pattern_matches(negated, name) {
                return false;
            }
        } else if pattern_matches(pattern, name) {
            matched = true;
        }
    }
    matched
}

fn pattern_matches(pattern: &str, name: &str) -> bool {
    if let Some(hashed) = pattern.strip_prefix("|1|") {
        return hashed_matches(hashed, name);
    }
    wildcard(
        pattern.to_ascii_lowercase().as_bytes(),
        name.to_ascii_lowercase().as_bytes(),
    )
}

/// `salt|hash`, both base64: HMAC-SHA1 of the name keyed by the salt (OpenSSH's HashKnownHosts).
fn hashed_matches(hashed: &str, name: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (STANDARD.decode(salt), STANDARD.decode(hash)) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salt);
    ring::hmac::verify(&key, name.as_bytes(), &hash).is_ok()
}

/// `*` (any run) and `?` (one character), as ssh's `match_pattern`.
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => {
            (0..=name.len()).any(|i| name.get(i..).is_some_and(|n| wildcard(rest, n)))
        }
        Some((b'?', rest)) => name.split_first().is_some_and(|(_, n)| wildcard(rest, n)),
        Some((c, rest)) => name
            .split_first()
            .is_some_and(|(d, n)| c == d && wildcard(rest, n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two ed25519 host keys (the public halves of keys made by ssh-keygen for this test).
    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIN0afC0qReb6Vhwldu05qmkAIr3z2PWK9j2tnd7xt+Ka";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAICm021Fi5vYhD+y3Sb8vgwtFmQduv8kxHFNSY2MawMz4";

    fn blob(b64: &str) -> Vec<u8> {
        STANDARD.decode(b64).unwrap()
    }

    #[test]
    fn accepts_only_the_listed_key_of_the_host() {
        let hosts = KnownHosts::parse(&format!(
            "# comment\n\ngit.example.com,10.0.0.1 ssh-ed25519 {KEY_A}\n[127.0.0.1]:2222 ssh-ed25519 {KEY_B} test\n"
        ));
        let f = "known_hosts";
        assert_eq!(hosts.check("git.example.com", 22, &blob(KEY_A), f), Ok(()));
        assert_eq!(hosts.check("GIT.example.com", 22, &blob(KEY_A), f), Ok(()));
        assert_eq!(hosts.check("10.0.0.1", 22, &blob(KEY_A), f), Ok(()));
        assert_eq!(hosts.check("127.0.0.1", 2222, &blob(KEY_B), f), Ok(()));
        // The port matters: the same host on port 22 is another entry.
        let unknown = hosts.check("127.0.0.1", 22, &blob(KEY_B), f).unwrap_err();
        assert!(unknown.contains("is unknown"), "{unknown}");
        let changed = hosts
            .check("git.example.com", 22, &blob(KEY_B), f)
            .unwrap_err();
        assert!(changed.contains("has CHANGED"), "{changed}");
        assert!(changed.contains(&describe_key(&blob(KEY_A))), "{changed}");
        assert!(changed.contains(&describe_key(&blob(KEY_B))), "{changed}");
    }

    #[test]
    fn wildcards_negations_hashes_and_markers() {
        // The hashed name is `[127.0.0.1]:2222` (salt and HMAC-SHA1 from `ssh-keygen -H`'s scheme).
        let salt = STANDARD.encode(b"0123456789abcdefghij");
        let key = ring::hmac::Key::new(
            ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            b"0123456789abcdefghij",
        );
        let hash = STANDARD.encode(ring::hmac::sign(&key, b"[127.0.0.1]:2222").as_ref());
        let hosts = KnownHosts::parse(&format!(
            "*.example.com,!evil.example.com ssh-ed25519 {KEY_A}\n|1|{salt}|{hash} ssh-ed25519 {KEY_B}\n@revoked * ssh-ed25519 {KEY_B}\n@cert-authority *.corp ssh-ed25519 {KEY_A}\nbroken line\n"
        ));
        let f = "kh";
        assert_eq!(hosts.check("git.example.com", 22, &blob(KEY_A), f), Ok(()));
        assert!(
            hosts
                .check("evil.example.com", 22, &blob(KEY_A), f)
                .is_err()
        );
        // Hashed entry matches, but the key is revoked everywhere.
        let revoked = hosts.check("127.0.0.1", 2222, &blob(KEY_B), f).unwrap_err();
        assert!(revoked.contains("@revoked"), "{revoked}");
        // Certificate authorities are not host keys.
        assert!(hosts.check("a.corp", 22, &blob(KEY_A), f).is_err());
    }

    #[test]
    fn fingerprints_read_like_ssh_keygen() {
        // As `ssh-keygen -lf` printed it for KEY_A.
        assert_eq!(
            describe_key(&blob(KEY_A)),
            "ssh-ed25519 SHA256:C+Up1KqZWyD874Nssd0j+p89UcVBgBbifheE6pFagG0"
        );
        assert_eq!(
            describe_key(b"\x00\x00"),
            format!(
                "unknown-type SHA256:{}",
                STANDARD_NO_PAD.encode(Sha256::digest(b"\x00\x00"))
            )
        );
    }
}
