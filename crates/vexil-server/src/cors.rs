//! CORS for the browser-facing fronts (OFREP, the Unleash frontend API), so pages served from
//! another origin can call them: `--cors-origin` lists the origins allowed (`*`: any). Without
//! any, no layer is attached and no answer carries a CORS header.
//!
//! A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered here,
//! before the gate: browsers send no credentials on it. An allowed origin gets 204 with the
//! methods, the headers the SDKs send and a max-age; any other origin 403 with no CORS header
//! (the browser then refuses the request). Every other answer gets `Vary: Origin`, and for an
//! allowed origin `Access-Control-Allow-Origin` (the origin itself) and
//! `Access-Control-Expose-Headers: ETag` (without it the SDKs cannot read the ETag and never
//! send `If-None-Match`). Like the gate, the future wraps the inner one without boxing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Method, Request, Response, StatusCode, header};

/// The request headers a preflight allows: those the OFREP web provider and the Unleash
/// browser SDKs send, and the token forms the gate reads. A fixed list rather than the
/// requested headers reflected: what a page may send stays what the server reads.
const ALLOWED_HEADERS: &str = "authorization, content-type, if-none-match, x-api-key, unleash-sdk, unleash-appname, unleash-connection-id, unleash-client-spec";
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
            let value = HeaderValue::from_str(&lower).map_err(|_| bad())?;
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
            return CorsFuture::Answered(Some(preflight(allowed)));
        }
        CorsFuture::Inner {
            inner: self.inner.call(request),
            allowed,
        }
    }
}

fn preflight(allowed: Option<HeaderValue>) -> Response<axum::body::Body> {
    let mut response = Response::new(axum::body::Body::empty());
    let headers = response.headers_mut();
    headers.insert(header::VARY, HeaderValue::from_static("origin"));
    match allowed {
        Some(origin) => {
            *response.status_mut() = StatusCode::NO_CONTENT;
            let headers = response.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOWED_METHODS),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOWED_HEADERS),
            );
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
    use super::CorsOrigins;

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
            "https://*.example.com",
            "https://a b",
        ] {
            let e = CorsOrigins::parse(&[bad]).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
