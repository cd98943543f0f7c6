//! Optional tokens: when any are configured, every gRPC call but health checks must carry
//! `authorization: Bearer <token>`, and every HTTP front request one of the forms its clients
//! send. The check itself is a layer (`layers::Gate`), attached once per port or front.

use std::collections::HashSet;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

/// Accepted tokens, kept as SHA-256 digests (a lookup then compares digests, not secrets).
#[derive(Clone, Default)]
pub struct Tokens {
    digests: Arc<HashSet<[u8; 32]>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.digests.len())
    }
}

impl Tokens {
    /// Tokens from text: one per line or comma-separated; blank lines and `#` comments skipped.
    pub fn parse(text: &str) -> Tokens {
        let digests = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .flat_map(|l| l.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(digest)
            .collect();
        Tokens {
            digests: Arc::new(digests),
        }
    }

    pub fn is_enabled(&self) -> bool {
        !self.digests.is_empty()
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether an `Authorization` header value carries an accepted token.
    pub fn accepts(&self, header: Option<&str>) -> bool {
        self.accepts_token(header.and_then(bearer))
    }

    /// Whether a bare token (an `X-API-Key` value, say) is accepted.
    pub fn accepts_token(&self, token: Option<&str>) -> bool {
        if !self.is_enabled() {
            return true;
        }
        token.is_some_and(|t| self.digests.contains(&digest(t.trim())))
    }

    /// Whether an HTTP request to a mirror carries an accepted token, in any of the forms
    /// clients can be configured to send: `Authorization: Bearer <token>`, a bare
    /// `Authorization: <token>` (Unleash SDKs), basic auth with the token as password or user
    /// (Flipper's adapter), `X-API-Key` or `Flipper-Cloud-Token`.
    pub fn accepts_http(&self, headers: &axum::http::HeaderMap) -> bool {
        !self.is_enabled() || self.matching_http(headers).is_some()
    }

    /// The digest of the accepted token an HTTP request carries, if any.
    fn matching_http(&self, headers: &axum::http::HeaderMap) -> Option<[u8; 32]> {
        let known = |t: &str| {
            let d = digest(t.trim());
            self.digests.contains(&d).then_some(d)
        };
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(auth) = header("authorization") {
            let found = bearer(auth).and_then(known).or_else(|| known(auth));
            if found.is_some() {
                return found;
            }
            if let Some(credentials) = basic(auth) {
                let (user, password) = credentials.split_once(':').unwrap_or((&credentials, ""));
                if let Some(d) = known(password).or_else(|| known(user)) {
                    return Some(d);
                }
            }
        }
        ["x-api-key", "flipper-cloud-token"]
            .into_iter()
            .find_map(|name| header(name).and_then(known))
    }

    /// The token that opens `namespace`'s change stream for the bearer of this request, for a
    /// browser's EventSource, which cannot send headers: HMAC-SHA256 of the namespace keyed by
    /// the token's digest (it reveals nothing of the token and opens nothing else). `None`
    /// without tokens (streams are open) or without an accepted token.
    pub fn stream_token(&self, headers: &axum::http::HeaderMap, namespace: &str) -> Option<String> {
        let d = self.matching_http(headers)?;
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &d);
        let tag = ring::hmac::sign(&key, &stream_message(namespace));
        Some(tag.as_ref().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Whether `token` is a stream token of `namespace` (compared in constant time).
    pub fn accepts_stream_token(&self, namespace: &str, token: &str) -> bool {
        if !self.is_enabled() {
            return true;
        }
        let Some(given) = decode_hex(token.trim()) else {
            return false;
        };
        let message = stream_message(namespace);
        self.digests.iter().any(|d| {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, d);
            ring::hmac::verify(&key, &message, &given).is_ok()
        })
    }
}

fn stream_message(namespace: &str) -> Vec<u8> {
    [b"vexil-stream\0".as_slice(), namespace.as_bytes()].concat()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

pub(crate) fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn basic(header: &str) -> Option<String> {
    use base64::Engine as _;
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    String::from_utf8(bytes).ok()
}

pub(crate) fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn tokens() {
        let t = super::Tokens::parse("# ops\nalpha\n\nbeta, gamma\n");
        assert_eq!(t.len(), 3);
        assert!(t.accepts(Some("Bearer alpha")));
        assert!(t.accepts(Some("bearer  gamma ")));
        assert!(!t.accepts(Some("Bearer delta")));
        assert!(!t.accepts(Some("alpha")));
        assert!(!t.accepts(None));
        assert!(super::Tokens::default().accepts(None));
        // A bare token, as OFREP's X-API-Key carries it.
        assert!(t.accepts_token(Some("beta")));
        assert!(!t.accepts_token(Some("Bearer beta")));
        assert!(!t.accepts_token(None));
        assert!(super::Tokens::default().accepts_token(None));
        // Mirrors: every form a Flipper or Unleash client can be set up to send.
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut h = axum::http::HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap());
            }
            h
        };
        assert!(t.accepts_http(&headers(&[("authorization", "alpha")])));
        assert!(t.accepts_http(&headers(&[("authorization", "Bearer beta")])));
        // "app:gamma" and "gamma:" in base64.
        assert!(t.accepts_http(&headers(&[("authorization", "Basic YXBwOmdhbW1h")])));
        assert!(t.accepts_http(&headers(&[("authorization", "Basic Z2FtbWE6")])));
        assert!(t.accepts_http(&headers(&[("flipper-cloud-token", "alpha")])));
        assert!(t.accepts_http(&headers(&[("x-api-key", "beta")])));
        assert!(!t.accepts_http(&headers(&[("authorization", "Basic YXBwOmRlbHRh")])));
        assert!(!t.accepts_http(&headers(&[("authorization", "delta")])));
        assert!(!t.accepts_http(&headers(&[])));
        assert!(super::Tokens::default().accepts_http(&headers(&[])));
    }
}
