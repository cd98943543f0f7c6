//! Conditional responses, for OFREP and the mirrors: strong ETags, `If-None-Match` and 304,
//! and gzip negotiation. Whole per-snapshot bodies are compressed once, at the first request
//! that accepts gzip.

use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};

/// A strong ETag: the first 16 bytes of the SHA-256 of `parts` (each followed by a zero byte
/// but the last), as `"<32 hex digits>"`, plus `suffix` inside the quotes.
pub fn etag_of(parts: &[&[u8]], suffix: &str) -> HeaderValue {
    tagged(&digest_of(parts), suffix)
}

fn digest_of(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update([0]);
        }
        hasher.update(part);
    }
    hasher.finalize().into()
}

fn tagged(digest: &[u8; 32], suffix: &str) -> HeaderValue {
    let mut text = String::with_capacity(36 + suffix.len());
    text.push('"');
    for b in digest.iter().take(16) {
        for nibble in [b >> 4, b & 15] {
            text.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
        }
    }
    text.push_str(suffix);
    text.push('"');
    tag(&text)
}

/// A serialised body and its strong ETag, and for whole bodies a gzipped copy (with a tag of
/// its own: another representation).
#[derive(Debug, Clone)]
pub struct Body {
    pub bytes: Bytes,
    pub etag: HeaderValue,
    /// For whole bodies: compressed at the first request that accepts gzip (once per
    /// snapshot), so a swap does not wait for it.
    gzip: Option<Arc<OnceLock<Option<Bytes>>>>,
    gzip_etag: HeaderValue,
}

/// Bodies below this size are not worth compressing.
const GZIP_MIN: usize = 1024;

impl Body {
    pub fn new(bytes: impl Into<Bytes>) -> Body {
        Body::new_tagged(bytes, "")
    }

    /// A body whose ETags carry `suffix`: one of several representations a request header
    /// chooses between (Flipper's profiles), whose tags must differ even for equal bytes.
    pub fn new_tagged(bytes: impl Into<Bytes>, suffix: &str) -> Body {
        let bytes: Bytes = bytes.into();
        let digest = digest_of(&[&bytes]);
        Body {
            etag: tagged(&digest, suffix),
            gzip_etag: tagged(&digest, &format!("{suffix}-gzip")),
            bytes,
            gzip: None,
        }
    }

    pub fn json(value: &serde_json::Value) -> Body {
        Body::new(serde_json::to_vec(value).unwrap_or_default())
    }

    /// A whole, per-snapshot body: also served gzipped to clients that accept it.
    pub fn whole(bytes: Vec<u8>) -> Body {
        Body::whole_tagged(bytes, "")
    }

    /// A whole body whose ETags carry `suffix` (see `new_tagged`).
    pub fn whole_tagged(bytes: Vec<u8>, suffix: &str) -> Body {
        let mut body = Body::new_tagged(bytes, suffix);
        if body.bytes.len() >= GZIP_MIN {
            body.gzip = Some(Arc::new(OnceLock::new()));
        }
        body
    }

    fn gzipped(&self) -> Option<&Bytes> {
        self.gzip
            .as_ref()?
            .get_or_init(|| {
                use std::io::Write as _;
                // Large bodies favour speed: this runs once, on a request.
                let level = if self.bytes.len() > 1 << 20 {
                    flate2::Compression::fast()
                } else {
                    flate2::Compression::default()
                };
                let mut encoder = flate2::write::GzEncoder::new(Vec::new(), level);
                encoder.write_all(&self.bytes).ok()?;
                encoder.finish().ok().map(Bytes::from)
            })
            .as_ref()
    }

    /// 200 with the body (gzipped if the client accepts it), or 304 if the client already has
    /// it.
    pub fn respond(&self, request: &HeaderMap, extra: &[(&'static str, HeaderValue)]) -> Response {
        let wants_gzip = self.gzip.is_some() && accepts_gzip(request);
        let etag = if wants_gzip {
            &self.gzip_etag
        } else {
            &self.etag
        };
        // Either representation's tag means the client holds this content.
        let fresh = etag_matches(request, &self.etag)
            || (self.gzip.is_some() && etag_matches(request, &self.gzip_etag));
        let mut gzipped = false;
        let mut response = if fresh {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let bytes = match self.gzipped().filter(|_| wants_gzip) {
                Some(gz) => {
                    gzipped = true;
                    gz
                }
                None => &self.bytes,
            };
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                bytes.clone(),
            )
                .into_response()
        };
        let headers = response.headers_mut();
        // A failed compression (never seen) falls back to the plain body and its tag.
        let etag = if wants_gzip && !fresh && !gzipped {
            &self.etag
        } else {
            etag
        };
        headers.insert(header::ETAG, etag.clone());
        if self.gzip.is_some() {
            headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
            if gzipped {
                headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
        }
        for (name, value) in extra {
            headers.insert(*name, value.clone());
        }
        response
    }
}

fn tag(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("\"\""))
}

/// Whether `Accept-Encoding` lists gzip (or `*`) without `q=0`.
fn accepts_gzip(request: &HeaderMap) -> bool {
    request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

/// Whether `If-None-Match` names this tag (or `*`); weak comparison, as RFC 9110 asks for it.
pub fn etag_matches(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let want = etag.as_bytes();
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/").as_bytes() == want)
}
