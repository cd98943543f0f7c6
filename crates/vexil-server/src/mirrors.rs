//! What the read-only mirrors (Flipper, Unleash) serve, serialised once per snapshot: whole
//! bodies with their strong ETags, one body per feature, and per-feature fragments to build
//! filtered bodies from. Plus what both fronts share: the namespace a path names and the
//! diagnostics body. Conditional answers (ETags, 304, gzip) are `conditional`'s.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::HeaderMap;
use vexil_core::{DEFAULT_NAMESPACE, Snapshot};
use vexil_mirror::{Finding, flipper, unleash};

use crate::conditional::Body;
use crate::evaluation::Error;
use crate::state::{Current, Served};

/// The served snapshot and the namespace a mirror path names (`/ns/{namespace}/...`, else the
/// default one), which it must have.
pub fn admit<'p>(
    current: &'p Current,
    params: &'p HashMap<String, String>,
) -> Result<(Served<'p>, &'p str), Error> {
    let served = current.served()?;
    let namespace = params
        .get("namespace")
        .map_or(DEFAULT_NAMESPACE, String::as_str);
    crate::evaluation::namespace(served.snapshot, namespace)?;
    Ok((served, namespace))
}

/// The Flipper client a request comes from, by the HTTP adapter's `User-Agent` (`Flipper HTTP
/// Adapter v1.4.2`): 1.1+ reads the expression gate; 0.25 to 1.0, and any caller that does
/// not say (curl, a proxy that drops the header), get the gates every Flipper evaluates as
/// served (an expression gate would be dropped silently by a client that predates it).
pub fn flipper_profile(headers: &HeaderMap) -> flipper::Profile {
    let version = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.trim().strip_prefix("Flipper HTTP Adapter v"))
        .map(|v| {
            let mut parts = v
                .split(|c: char| !c.is_ascii_digit())
                .map(|p| p.parse::<u64>().unwrap_or(0));
            (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
        });
    match version {
        Some(v) if v >= (1, 1) => flipper::Profile::Expressions,
        _ => flipper::Profile::Legacy,
    }
}

/// The index of a profile in `Tables::flipper`'s arrays.
pub fn profile_index(profile: flipper::Profile) -> usize {
    match profile {
        flipper::Profile::Expressions => 0,
        flipper::Profile::Legacy => 1,
    }
}

/// The legacy bodies keep the tags they had before profiles existed (clients of then keep
/// their caches); the expression bodies' tags differ from them even for equal bytes.
pub fn profile_tag(profile: flipper::Profile) -> &'static str {
    match profile {
        flipper::Profile::Expressions => "-expr",
        flipper::Profile::Legacy => "",
    }
}

/// One namespace's Flipper features for one profile: whole bodies per form, and each feature
/// per form.
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
    /// Per `Kind`, in flag order: each feature as it sits in the whole body, for filtered
    /// bodies (`namePrefix`, `tag`, `project`).
    pub fragments: Vec<Fragment>,
    /// Per `Kind`: the whole body around its features, up to and including the features
    /// array's `[`, and from its `]`.
    pub envelopes: [(Bytes, Bytes); 3],
}

/// One feature, serialised per `Kind` (if that kind of client gets it), with what filters
/// read.
#[derive(Debug)]
pub struct Fragment {
    pub name: Box<str>,
    pub tags: Vec<String>,
    pub per_kind: [Option<Bytes>; 3],
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
    /// Per namespace, per profile (`profile_index`).
    pub flipper: HashMap<Box<str>, [FlipperTable; 2]>,
    pub unleash: HashMap<Box<str>, UnleashTable>,
    /// `GET /mirrors/diagnostics`: every finding of every mirror.
    pub diagnostics: Body,
    /// Each namespace's flagd definitions, the JSON text the sync service sends.
    pub flagd: HashMap<Box<str>, Arc<str>>,
}

impl Tables {
    pub fn build(snapshot: &Snapshot) -> Tables {
        let mut findings = Vec::new();
        let mut flipper_tables = HashMap::new();
        let mut unleash_tables = HashMap::new();
        let mut flagd_definitions = HashMap::new();
        for ns in snapshot.namespaces() {
            let mut flagd = vexil_mirror::flagd::export(ns);
            flagd_definitions.insert(ns.name.clone(), Arc::from(flagd.text()));
            findings.append(&mut flagd.findings);
            let mut expressions = flipper::export(ns, flipper::Profile::Expressions);
            let mut gates_only = flipper::export(ns, flipper::Profile::Legacy);
            flipper_tables.insert(
                ns.name.clone(),
                [
                    flipper_table(&expressions, flipper::Profile::Expressions),
                    flipper_table(&gates_only, flipper::Profile::Legacy),
                ],
            );
            findings.append(&mut expressions.findings);
            findings.append(&mut gates_only.findings);
            let mut legacy = unleash::export(ns, unleash::Profile::Legacy);
            let mut modern = unleash::export(ns, unleash::Profile::Modern);
            unleash_tables.insert(ns.name.clone(), unleash_table(&legacy, &modern));
            findings.append(&mut legacy.findings);
            findings.append(&mut modern.findings);
            // Node's engine reads the modern body: its findings come from a second pass.
            findings.extend(unleash::node_findings(ns));
        }
        findings.sort();
        let diagnostics = Body::whole(to_vec(&diagnostics_json(snapshot, &findings)));
        Tables {
            flipper: flipper_tables,
            unleash: unleash_tables,
            diagnostics,
            flagd: flagd_definitions,
        }
    }
}

fn flipper_table(export: &flipper::Export, profile: flipper::Profile) -> FlipperTable {
    let tag = profile_tag(profile);
    // Each feature is serialised once per form; whole bodies join those bytes.
    let fragments: Vec<[Vec<u8>; 3]> = export
        .features
        .iter()
        .map(|f| {
            flipper::Form::ALL.map(|form| {
                let mut out = Vec::new();
                f.write_json(form, &mut out);
                out
            })
        })
        .collect();
    let all = [0, 1, 2].map(|form| {
        let parts = fragments.iter().filter_map(|per_form| per_form.get(form));
        Body::whole_tagged(join(FLIPPER_HEAD, parts, FLIPPER_TAIL), tag)
    });
    let features = export
        .features
        .iter()
        .zip(fragments)
        .map(|(f, per_form)| (f.key.clone(), per_form.map(|b| Body::new_tagged(b, tag))))
        .collect();
    FlipperTable { all, features }
}

fn to_vec(value: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// The envelope of Flipper's `GET /features` body.
pub const FLIPPER_HEAD: &[u8] = b"{\"features\":[";
pub const FLIPPER_TAIL: &[u8] = b"]}";

/// `head`, the parts separated by commas, `tail`: a JSON body from serialised pieces.
pub fn join<P: AsRef<[u8]>>(
    head: &[u8],
    parts: impl Iterator<Item = P> + Clone,
    tail: &[u8],
) -> Vec<u8> {
    let size = head.len() + tail.len() + parts.clone().map(|p| p.as_ref().len() + 1).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(head);
    for (i, part) in parts.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(part.as_ref());
    }
    out.extend_from_slice(tail);
    out
}

fn unleash_table(legacy: &unleash::Export, modern: &unleash::Export) -> UnleashTable {
    let export_of = |kind: Kind| match kind.profile().0 {
        unleash::Profile::Legacy => legacy,
        unleash::Profile::Modern => modern,
    };
    // Per kind: the body around the features (all the segments its features use), split
    // where the features go.
    let envelopes = Kind::ALL.map(|kind| {
        let export = export_of(kind);
        let text = String::from_utf8(to_vec(&export.envelope(&export.features, kind.profile().1)))
            .unwrap_or_default();
        let marker = "\"features\":[]";
        let cut = text
            .find(marker)
            .map_or(text.len(), |i| i + marker.len() - 1);
        let (head, tail) = text.split_at(cut);
        (Bytes::from(head.to_owned()), Bytes::from(tail.to_owned()))
    });
    let legacy_by_name: HashMap<&str, &unleash::Feature> =
        legacy.features.iter().map(|f| (&*f.name, f)).collect();
    let modern_by_name: HashMap<&str, &unleash::Feature> =
        modern.features.iter().map(|f| (&*f.name, f)).collect();
    // Flag order; the legacy export is a subset (kept general: any flag either export has).
    let names: Vec<&Box<str>> = modern
        .features
        .iter()
        .map(|f| &f.name)
        .chain(
            legacy
                .features
                .iter()
                .map(|f| &f.name)
                .filter(|n| !modern_by_name.contains_key(&***n)),
        )
        .collect();
    // Each feature serialised once per kind: legacy and modern inline (also the bodies of
    // `GET /client/features/{name}`), and modern with segment ids.
    let fragments: Vec<Fragment> = names
        .iter()
        .map(|name| {
            let per_kind = Kind::ALL.map(|kind| {
                let (export, feature) = match kind.profile().0 {
                    unleash::Profile::Legacy => (legacy, *legacy_by_name.get(&***name)?),
                    unleash::Profile::Modern => (modern, *modern_by_name.get(&***name)?),
                };
                let mut out = Vec::new();
                export.write_feature(feature, kind.profile().1, &mut out);
                Some(Bytes::from(out))
            });
            let tags = modern_by_name
                .get(&***name)
                .or_else(|| legacy_by_name.get(&***name))
                .map(|f| f.tags.clone())
                .unwrap_or_default();
            Fragment {
                name: (*name).clone(),
                tags,
                per_kind,
            }
        })
        .collect();
    let all = [0, 1, 2].map(|kind| {
        let parts = fragments
            .iter()
            .filter_map(|f| f.per_kind.get(kind)?.as_ref());
        let (head, tail) = envelopes.get(kind).cloned().unwrap_or_default();
        Body::whole(join(&head, parts, &tail))
    });
    let features = fragments
        .iter()
        .map(
            |Fragment {
                 name,
                 per_kind: [legacy, inline, _],
                 ..
             }| {
                // Bytes are shared, not copied.
                let inline = inline.clone().map(Body::new);
                let legacy = legacy.clone().map(Body::new);
                (name.clone(), [legacy, inline.clone(), inline])
            },
        )
        .collect();
    UnleashTable {
        all,
        features,
        fragments,
        envelopes,
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
                "unusual_inputs_only": f.unusual_inputs_only,
                "declared": vexil_mirror::declares(snapshot, &f.namespace, &f.flag, f.mirror),
            })
        })
        .collect();
    // Counted in flags: a flag with several findings counts once, as its worst.
    let mut summary = serde_json::Map::new();
    for (mirror, c) in vexil_mirror::coverage(snapshot, findings) {
        // The flags whose findings for this client `vexil validate` reports (a flag's own
        // `clients:` decides for it, so namespaces would not say it).
        let declared = vexil_mirror::declared_flags(snapshot, mirror);
        summary.insert(
            mirror.as_str().into(),
            serde_json::json!({
                "flags": c.flags,
                "exported": c.exported,
                "exact": c.exact,
                "inexact": c.inexact,
                "omitted": c.omitted,
                "declared": declared,
            }),
        );
    }
    serde_json::json!({
        "revision": snapshot.revision(),
        "summary": summary,
        "findings": items,
    })
}
