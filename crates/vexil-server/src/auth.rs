//! Optional bearer tokens: when any are configured, every RPC but health checks must carry
//! `authorization: Bearer <token>`.

use std::collections::HashSet;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use tonic::{Request, Status};

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

    /// A tonic interceptor enforcing the tokens; `on_reject` is called for each refused call.
    pub fn interceptor<F: Fn() + Clone + Send + Sync>(
        &self,
        on_reject: F,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + use<F> {
        let tokens = self.clone();
        move |req: Request<()>| {
            let header = req
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            if tokens.accepts(header) {
                Ok(req)
            } else {
                on_reject();
                Err(Status::unauthenticated(
                    "missing or unknown bearer token: send `authorization: Bearer <token>`",
                ))
            }
        }
    }
}

fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
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
    }
}
