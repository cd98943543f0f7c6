//! CORS for the browser-facing fronts (OFREP, the Unleash frontend API), so pages served from
//! another origin can call them: `--cors-origin` lists the origins allowed (`*`: any). Without
//! any, no layer is attached and no answer carries a CORS header.
//!
//! A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered here,
//! before the gate: browsers send no credentials on it. An allowed origin gets 204 with the
//! methods, the requested headers reflected (validated as header names, bounded; as the Unleash
//! server does, so SDK custom headers and tracing headers pass) and a max-age; any other origin
//! 403 with no CORS header (the browser then refuses the request). Every other answer gets
//! `Vary: Origin`, and for an allowed origin `Access-Control-Allow-Origin` (the origin itself) and
//! `Access-Control-Expose-Headers: ETag` (without it the SDKs cannot read the ETag and never
//! send `If-None-Match`). Like the gate, the future wraps the inner one without boxing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Method, Request, Response, StatusCode, header};

/// Requested headers reflected by a preflight: at most this many names, from a header of at
/// most `MAX_REQUEST_HEADERS_LEN` bytes (a longer one is reflected not at all). Browsers send
/// the names a page sets: SDK custom headers (OFREP `headers`, unleash-proxy-client
/// `customHeaders`), tracing (`traceparent`, `baggage`, `sentry-trace`), the tokens.
const MAX_REQUEST_HEADERS: usize = 64;
const MAX_REQUEST_HEADERS_LEN: usize = 4096;
const ALLOWED_METHODS: &str = "GET, HEAD, POST";
/// Chromium caps a preflight's cache at two hours; Firefox allows a day.
const MAX_AGE: &str = "7200";

#[derive(Debug, thiserror::Error)]
#[error(
    "--cors-origin `{0}` is not an origin: write scheme://host[:port] with no path (or `*` for any)"
)]
pub struct BadOrigin(String);

/// The origins allowed (`--cors-origin`, `VEXIL_CORS_ORIGINS`), as `Origin` headers spell
/// them.
#[derive(Debug, Clone, Default)]
pub struct CorsOrigins {
    origins: Arc<[HeaderValue]>,
    any: bool,
}

impl CorsOrigins {
    pub fn parse<S: AsRef<str>>(origins: &[S]) -> Result<CorsOrigins, BadOrigin> {
        let mut out = Vec::new();
        let mut any = false;
        for origin in origins.iter().map(|o| o.as_ref().trim()) {
            if origin == "*" {
                any = true;
                continue;
            }
            // `a,,b` or a trailing comma in VEXIL_CORS_ORIGINS.
            if origin.is_empty() {
                continue;
            }
            let bad = || BadOrigin(origin.to_owned());
            // Browsers send the origin in lower case.
            let lower = origin.to_ascii_lowercase();
            let (scheme, rest) = lower.split_once("://").ok_or_else(bad)?;
            if !matches!(scheme, "http" | "https")
                || rest.is_empty()
                || rest.contains(['/', '?', '#', ' ', '*'])
            {
                return Err(bad());
            }
            // Browsers omit the scheme's default port.
            let default_port = if scheme == "http" { ":80" } else { ":443" };
            let host = rest.strip_suffix(default_port).unwrap_or(rest);
            if host.is_empty() {
                return Err(bad());
            }
            let value = HeaderValue::from_str(&format!("{scheme}://{host}")).map_err(|_| bad())?;
            out.push(value);
        }
        Ok(CorsOrigins {
            origins: out.into(),
            any,
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.any || !self.origins.is_empty()
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        self.any || self.origins.iter().any(|o| o == origin)
    }
}

/// The layer: wraps a front's routes in `Cors`.
#[derive(Debug, Clone)]
pub struct CorsLayer {
    origins: CorsOrigins,
}

impl CorsLayer {
    pub fn new(origins: CorsOrigins) -> CorsLayer {
        CorsLayer { origins }
    }
}

impl<S> tower_layer::Layer<S> for CorsLayer {
    type Service = Cors<S>;

    fn layer(&self, inner: S) -> Cors<S> {
        Cors {
            inner,
            origins: self.origins.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Cors<S> {
    inner: S,
    origins: CorsOrigins,
}

impl<S, B> tower_service::Service<Request<B>> for Cors<S>
where
    S: tower_service::Service<Request<B>, Response = Response<axum::body::Body>>,
    S::Future: Unpin,
{
    type Response = Response<axum::body::Body>;
    type Error = S::Error;
    type Future = CorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let headers = request.headers();
        let origin = headers.get(header::ORIGIN);
        let allowed = origin.filter(|o| self.origins.allows(o)).cloned();
        if request.method() == Method::OPTIONS
            && origin.is_some()
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            let requested = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS);
            return CorsFuture::Answered(Some(preflight(allowed, requested)));
        }
        CorsFuture::Inner {
            inner: self.inner.call(request),
            allowed,
        }
    }
}

/// The header names of `Access-Control-Request-Headers` a preflight allows: each a valid
/// token (RFC 9110), lower-cased; junk names dropped (the browser then refuses the request
/// that would send them); nothing from an oversized header.
fn reflected(requested: Option<&HeaderValue>) -> Option<HeaderValue> {
    let requested = requested?.as_bytes();
    if requested.len() > MAX_REQUEST_HEADERS_LEN {
        return None;
    }
    let is_tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    let names: Vec<String> = requested
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|name| !name.is_empty() && name.iter().all(is_tchar))
        .take(MAX_REQUEST_HEADERS)
        .map(|name| String::from_utf8_lossy(name).to_ascii_lowercase())
        .collect();
    if names.is_empty() {
        return None;
    }
    HeaderValue::from_str(&names.join(", ")).ok()
}

fn preflight(
    allowed: Option<HeaderValue>,
    requested: Option<&HeaderValue>,
) -> Response<axum::body::Body> {
    let mut response = Response::new(axum::body::Body::empty());
    let headers = response.headers_mut();
    headers.insert(header::VARY, HeaderValue::from_static("origin"));
    match allowed {
        Some(origin) => {
            *response.status_mut() = StatusCode::NO_CONTENT;
            let headers = response.headers_mut();
            // The answer reflects the requested headers: caches must key on them too.
            headers.insert(
                header::VARY,
                HeaderValue::from_static("origin, access-control-request-headers"),
            );
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOWED_METHODS),
            );
            if let Some(names) = reflected(requested) {
                headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, names);
            }
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(MAX_AGE),
            );
        }
        None => {
            *response.status_mut() = StatusCode::FORBIDDEN;
            *response.body_mut() =
                axum::body::Body::from("origin not allowed (see --cors-origin)\n");
        }
    }
    response
}

pub enum CorsFuture<F> {
    Answered(Option<Response<axum::body::Body>>),
    Inner {
        inner: F,
        allowed: Option<HeaderValue>,
    },
}

impl<F> std::fmt::Debug for CorsFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CorsFuture")
    }
}

impl<F, E> Future for CorsFuture<F>
where
    F: Future<Output = Result<Response<axum::body::Body>, E>> + Unpin,
{
    type Output = Result<Response<axum::body::Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            CorsFuture::Answered(response) => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // Polled after completion: never answered twice.
                None => Poll::Pending,
            },
            CorsFuture::Inner { inner, allowed } => {
                let mut result = std::task::ready!(Pin::new(inner).poll(cx));
                if let Ok(response) = &mut result {
                    let headers = response.headers_mut();
                    // Answers differ by origin: caches must key on it.
                    headers.append(header::VARY, HeaderValue::from_static("origin"));
                    if let Some(origin) = allowed.take() {
                        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                        headers.insert(
                            header::ACCESS_CONTROL_EXPOSE_HEADERS,
                            HeaderValue::from_static("ETag"),
                        );
                    }
                }
                Poll::Ready(result)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{CorsOrigins, reflected};

    #[test]
    fn origins() {
        let ok = CorsOrigins::parse(&[
            "https://app.example.com",
            " http://127.0.0.1:8080 ",
            "HTTP://Admin.Example",
        ])
        .unwrap();
        assert!(ok.is_enabled());
        for origin in [
            "https://app.example.com",
            "http://127.0.0.1:8080",
            "http://admin.example",
        ] {
            assert!(ok.allows(&origin.parse().unwrap()), "{origin}");
        }
        // The default port is what browsers omit; another port is another origin.
        let ported = CorsOrigins::parse(&[
            "https://app.example.com:443",
            "http://b.example:80",
            "http://c.example:443",
            "",
        ])
        .unwrap();
        for origin in [
            "https://app.example.com",
            "http://b.example",
            "http://c.example:443",
        ] {
            assert!(ported.allows(&origin.parse().unwrap()), "{origin}");
        }
        assert!(!ported.allows(&"https://app.example.com:443".parse().unwrap()));
        // Empty entries (a trailing comma in VEXIL_CORS_ORIGINS) are skipped.
        let trailing = CorsOrigins::parse(&["https://a.example", " ", ""]).unwrap();
        assert!(trailing.allows(&"https://a.example".parse().unwrap()));
        assert!(!CorsOrigins::parse(&["", " "]).unwrap().is_enabled());
        for origin in [
            "https://app.example.com:443",
            "http://app.example.com",
            "null",
            "https://evil.example",
        ] {
            assert!(!ok.allows(&origin.parse().unwrap()), "{origin}");
        }
        assert!(!CorsOrigins::parse::<&str>(&[]).unwrap().is_enabled());
        let any = CorsOrigins::parse(&["*"]).unwrap();
        assert!(any.is_enabled() && any.allows(&"http://x.example".parse().unwrap()));
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://a.example/path",
            "ftp://a.example",
            "https://",
            "https://:443",
            "https://*.example.com",
            "https://a b",
        ] {
            let e = CorsOrigins::parse(&[bad]).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn requested_headers() {
        let reflect = |requested: &str| -> Option<String> {
            reflected(Some(&requested.parse().unwrap())).map(|v| v.to_str().unwrap().to_owned())
        };
        // (requested, reflected)
        let long = format!("x-a,{}", "b".repeat(4096));
        let many: Vec<String> = (0..70).map(|i| format!("x-{i}")).collect();
        let table: [(&str, Option<&str>); 7] = [
            (
                "content-type,If-None-Match,authorization",
                Some("content-type, if-none-match, authorization"),
            ),
            (
                "traceparent, baggage, sentry-trace, x-tenant",
                Some("traceparent, baggage, sentry-trace, x-tenant"),
            ),
            ("x-ok, bad name, x(y), , x-also", Some("x-ok, x-also")),
            ("", None),
            (" , ,", None),
            (&long, None),
            ("a:b", None),
        ];
        for (requested, want) in table {
            assert_eq!(reflect(requested).as_deref(), want, "{requested}");
        }
        let reflected_many = reflect(&many.join(",")).unwrap();
        assert_eq!(reflected_many.split(", ").count(), 64);
        assert_eq!(reflected(None), None);
    }
}
