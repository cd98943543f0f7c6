//! What the read-only mirrors (Flipper, Unleash) serve, serialised once per snapshot: whole
//! bodies with their strong ETags, one body per feature, and per-feature fragments to build
//! filtered bodies from. Plus what both fronts share: ETag matching and the diagnostics body.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};
use vexil_core::Snapshot;
use vexil_core::mirror::{Finding, Mirror, flipper, unleash};

/// A serialised body and its strong ETag, and for whole bodies a gzipped copy (with a tag of
/// its own: another representation).
#[derive(Debug, Clone)]
pub struct Body {
    pub bytes: Bytes,
    pub etag: HeaderValue,
    gzip: Option<(Bytes, HeaderValue)>,
}

/// Bodies below this size are not worth compressing.
const GZIP_MIN: usize = 1024;

impl Body {
    pub fn new(bytes: Vec<u8>) -> Body {
        let digest = Sha256::digest(&bytes);
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        Body {
            etag: tag(&format!("\"{hex}\"")),
            bytes: Bytes::from(bytes),
            gzip: None,
        }
    }

    pub fn json(value: &serde_json::Value) -> Body {
        Body::new(serde_json::to_vec(value).unwrap_or_default())
    }

    /// A per-snapshot body: also gzipped once, here, for clients that accept it.
    pub fn json_with_gzip(value: &serde_json::Value) -> Body {
        let mut body = Body::json(value);
        if body.bytes.len() >= GZIP_MIN {
            use std::io::Write as _;
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            if encoder.write_all(&body.bytes).is_ok() {
                if let Ok(gz) = encoder.finish() {
                    let etag = body.etag.to_str().unwrap_or("\"").trim_end_matches('"');
                    body.gzip = Some((Bytes::from(gz), tag(&format!("{etag}-gzip\""))));
                }
            }
        }
        body
    }

    /// 200 with the body (gzipped if the client accepts it), or 304 if the client already has
    /// it.
    pub fn respond(&self, request: &HeaderMap, extra: &[(&'static str, HeaderValue)]) -> Response {
        let gzip = self.gzip.as_ref().filter(|_| accepts_gzip(request));
        let (bytes, etag) = gzip.map_or((&self.bytes, &self.etag), |(b, t)| (b, t));
        // Either representation's tag means the client holds this content.
        let fresh = etag_matches(request, &self.etag)
            || self
                .gzip
                .as_ref()
                .is_some_and(|(_, t)| etag_matches(request, t));
        let mut response = if fresh {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
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
        headers.insert(header::ETAG, etag.clone());
        if self.gzip.is_some() {
            headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
            if gzip.is_some() && !fresh {
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
fn etag_matches(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let want = etag.as_bytes();
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/").as_bytes() == want)
}

/// One namespace's Flipper features: whole bodies per form, and each feature per form.
#[derive(Debug)]
pub struct FlipperTable {
    pub all: [Body; 3],
    /// Feature key -> per form (index of `Form::ALL`): the feature object as a body.
    pub features: HashMap<Box<str>, [Body; 3]>,
}

/// One namespace's Unleash features for each client kind.
#[derive(Debug)]
pub struct UnleashTable {
    /// Per `Kind`.
    pub all: [Body; 3],
    /// Feature name -> per `Kind`: the feature object (segments written inline), if that
    /// kind of client gets it.
    pub features: HashMap<Box<str>, [Option<Body>; 3]>,
    /// Feature name -> per `Kind`: the feature object as it sits in the whole body, in
    /// flag order, for filtered bodies (`namePrefix`).
    pub fragments: Vec<(Box<str>, [Option<Bytes>; 3])>,
    /// Per `Kind`: what follows the features array in a whole body.
    pub tails: [Bytes; 3],
}

/// The Unleash client a request comes from, by its `Unleash-Client-Spec` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No header: ruby-unleash 3.2.5 and its era.
    Legacy = 0,
    /// A spec below 4.2.0: segments inline.
    ModernInline = 1,
    /// 4.2.0 and later: segments sent separately.
    ModernSegments = 2,
}

impl Kind {
    pub fn of(headers: &HeaderMap) -> Kind {
        let Some(spec) = headers
            .get("unleash-client-spec")
            .and_then(|v| v.to_str().ok())
        else {
            return Kind::Legacy;
        };
        let mut parts = spec
            .trim()
            .trim_start_matches('v')
            .split(|c: char| !c.is_ascii_digit())
            .map(|p| p.parse::<u64>().unwrap_or(0));
        let version = (
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
        );
        if version >= (4, 2, 0) {
            Kind::ModernSegments
        } else {
            Kind::ModernInline
        }
    }

    fn profile(self) -> (unleash::Profile, unleash::Segments) {
        match self {
            Kind::Legacy => (unleash::Profile::Legacy, unleash::Segments::Inline),
            Kind::ModernInline => (unleash::Profile::Modern, unleash::Segments::Inline),
            Kind::ModernSegments => (unleash::Profile::Modern, unleash::Segments::Separate),
        }
    }

    const ALL: [Kind; 3] = [Kind::Legacy, Kind::ModernInline, Kind::ModernSegments];
}

/// Everything the mirrors serve for one snapshot.
#[derive(Debug)]
pub struct Tables {
    pub flipper: HashMap<Box<str>, FlipperTable>,
    pub unleash: HashMap<Box<str>, UnleashTable>,
    pub findings: Vec<Finding>,
    /// `GET /mirrors/diagnostics`.
    pub diagnostics: Body,
}

impl Tables {
    pub fn build(snapshot: &Snapshot) -> Tables {
        let mut findings = Vec::new();
        let mut flipper_tables = HashMap::new();
        let mut unleash_tables = HashMap::new();
        for ns in snapshot.namespaces() {
            let f = flipper::export(ns);
            findings.extend(f.findings.iter().cloned());
            flipper_tables.insert(ns.name.clone(), flipper_table(&f));
            let legacy = unleash::export(ns, unleash::Profile::Legacy);
            let modern = unleash::export(ns, unleash::Profile::Modern);
            findings.extend(legacy.findings.iter().cloned());
            findings.extend(modern.findings.iter().cloned());
            unleash_tables.insert(ns.name.clone(), unleash_table(&legacy, &modern));
        }
        findings.sort();
        let diagnostics = Body::json_with_gzip(&diagnostics_json(snapshot, &findings));
        Tables {
            flipper: flipper_tables,
            unleash: unleash_tables,
            findings,
            diagnostics,
        }
    }
}

fn flipper_table(export: &flipper::Export) -> FlipperTable {
    let all = flipper::Form::ALL.map(|form| {
        let features: Vec<serde_json::Value> =
            export.features.iter().map(|f| f.to_json(form)).collect();
        Body::json_with_gzip(&serde_json::json!({ "features": features }))
    });
    let features = export
        .features
        .iter()
        .map(|f| {
            (
                f.key.clone(),
                flipper::Form::ALL.map(|form| Body::json(&f.to_json(form))),
            )
        })
        .collect();
    FlipperTable { all, features }
}

fn unleash_table(legacy: &unleash::Export, modern: &unleash::Export) -> UnleashTable {
    let export_of = |kind: Kind| match kind.profile().0 {
        unleash::Profile::Legacy => legacy,
        unleash::Profile::Modern => modern,
    };
    let all = Kind::ALL.map(|kind| {
        let export = export_of(kind);
        Body::json_with_gzip(&export.body(&export.features, kind.profile().1))
    });
    let tails = Kind::ALL.map(|kind| {
        let export = export_of(kind);
        // The whole body (all its segments) without features, cut after the empty array.
        let mut whole = export.body(&export.features, kind.profile().1);
        if let Some(features) = whole.get_mut("features") {
            *features = serde_json::Value::Array(Vec::new());
        }
        let empty = serde_json::to_string(&whole).unwrap_or_default();
        let marker = "\"features\":[]";
        let tail = empty
            .find(marker)
            .and_then(|i| empty.get(i + marker.len()..))
            .unwrap_or("}");
        Bytes::from(tail.to_owned())
    });
    let mut features = HashMap::new();
    let mut fragments = Vec::new();
    let legacy_by_name: HashMap<&str, &unleash::Feature> =
        legacy.features.iter().map(|f| (&*f.name, f)).collect();
    let modern_by_name: HashMap<&str, &unleash::Feature> =
        modern.features.iter().map(|f| (&*f.name, f)).collect();
    // Flag order; the legacy export is a subset (kept general: any flag either export has).
    let names = modern.features.iter().map(|f| &f.name).chain(
        legacy
            .features
            .iter()
            .map(|f| &f.name)
            .filter(|n| !modern_by_name.contains_key(&***n)),
    );
    for name in names {
        let per_kind = Kind::ALL.map(|kind| {
            let (export, feature) = match kind.profile().0 {
                unleash::Profile::Legacy => (legacy, *legacy_by_name.get(&**name)?),
                unleash::Profile::Modern => (modern, *modern_by_name.get(&**name)?),
            };
            let whole = Body::json(&export.feature_json(feature, unleash::Segments::Inline));
            let fragment = serde_json::to_vec(&export.feature_json(feature, kind.profile().1))
                .unwrap_or_default();
            Some((whole, Bytes::from(fragment)))
        });
        features.insert(name.clone(), per_kind.clone().map(|x| x.map(|(b, _)| b)));
        fragments.push((name.clone(), per_kind.map(|x| x.map(|(_, f)| f))));
    }
    UnleashTable {
        all,
        features,
        fragments,
        tails,
    }
}

fn diagnostics_json(snapshot: &Snapshot, findings: &[Finding]) -> serde_json::Value {
    let items: Vec<serde_json::Value> = findings
        .iter()
        .map(|f| {
            serde_json::json!({
                "namespace": &*f.namespace,
                "flag": &*f.flag,
                "mirror": f.mirror.as_str(),
                "fidelity": f.fidelity.as_str(),
                "reason": f.reason,
                "file": f.file,
                "line": f.pos.line,
                "column": f.pos.column,
            })
        })
        .collect();
    // A flag has one omission finding at most, but may have several inexact ones.
    let omitted_flags = |mirror: Mirror| {
        findings
            .iter()
            .filter(|f| f.mirror == mirror && f.fidelity == vexil_core::mirror::Fidelity::Omitted)
            .map(|f| (&f.namespace, &f.flag))
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    let mut summary = serde_json::Map::new();
    for mirror in Mirror::ALL {
        let count = |fidelity| {
            findings
                .iter()
                .filter(|f| f.mirror == mirror && f.fidelity == fidelity)
                .count()
        };
        summary.insert(
            mirror.as_str().into(),
            serde_json::json!({
                "flags": snapshot.flag_count(),
                "exported": snapshot.flag_count() - omitted_flags(mirror),
                "inexact": count(vexil_core::mirror::Fidelity::Inexact),
                "omitted": count(vexil_core::mirror::Fidelity::Omitted),
            }),
        );
    }
    serde_json::json!({
        "revision": snapshot.revision(),
        "summary": summary,
        "findings": items,
    })
}
