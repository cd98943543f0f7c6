//! The Unleash client API's wire model: constraints, strategies, features and the export that
//! serialises them.

use std::collections::BTreeSet;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value as Json, json};

use crate::Finding;

/// An Unleash constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    pub context_name: String,
    pub operator: &'static str,
    /// `values` for list operators, else the single `value`.
    pub values: Vec<String>,
    pub single: bool,
    pub case_insensitive: bool,
    pub inverted: bool,
}

impl Constraint {
    pub(super) fn list(
        context_name: &str,
        operator: &'static str,
        values: Vec<String>,
    ) -> Constraint {
        Constraint {
            context_name: context_name.to_owned(),
            operator,
            values,
            single: false,
            case_insensitive: false,
            inverted: false,
        }
    }

    pub(super) fn single(context_name: &str, operator: &'static str, value: String) -> Constraint {
        Constraint {
            single: true,
            ..Constraint::list(context_name, operator, vec![value])
        }
    }

    pub(super) fn case_insensitive(self, yes: bool) -> Constraint {
        Constraint {
            case_insensitive: yes,
            ..self
        }
    }

    pub(super) fn inverted(self, yes: bool) -> Constraint {
        Constraint {
            inverted: yes,
            ..self
        }
    }

    pub fn to_json(&self) -> Json {
        serde_json::to_value(self).unwrap_or(Json::Null)
    }
}

impl Serialize for Constraint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(6))?;
        m.serialize_entry("contextName", &self.context_name)?;
        m.serialize_entry("operator", self.operator)?;
        if self.single {
            m.serialize_entry("value", self.values.first().map_or("", String::as_str))?;
            m.serialize_entry("values", &[] as &[String])?;
        } else {
            m.serialize_entry("values", &self.values)?;
        }
        m.serialize_entry("caseInsensitive", &self.case_insensitive)?;
        m.serialize_entry("inverted", &self.inverted)?;
        m.end()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Atom {
    Constraint(Constraint),
    /// An index into the namespace's segments, exported as an Unleash segment.
    Segment(usize),
}

/// Atoms that must all hold.
pub(super) type Conj = Vec<Atom>;

#[derive(Debug, Clone, PartialEq)]
pub struct Strategy {
    pub(super) name: &'static str,
    pub(super) parameters: Vec<(&'static str, String)>,
    pub(super) atoms: Conj,
    pub(super) variants: Vec<Json>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    pub name: Box<str>,
    /// The flag's tags, for `tag=` filters.
    pub tags: Vec<String>,
    pub(super) description: Option<String>,
    pub(super) enabled: bool,
    pub(super) strategies: Vec<Strategy>,
    /// Feature variants (the legacy profile's only kind).
    pub(super) variants: Vec<Json>,
}

/// A namespace's flags for one client profile (flag order), the segments they reference and
/// what could not be said exactly.
#[derive(Debug, Clone, Default)]
pub struct Export {
    pub features: Vec<Feature>,
    /// Per namespace segment (by index): its constraints, if it is exported as an Unleash segment.
    pub(super) segments: Vec<Option<Vec<Constraint>>>,
    /// Segment keys, by index.
    pub(super) names: Vec<Box<str>>,
    pub findings: Vec<Finding>,
}

/// How segments are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Segments {
    /// Top-level `segments` and ids in strategies (clients with spec >= 4.2.0).
    Separate,
    /// Each segment's constraints written into every strategy that uses it.
    Inline,
}

impl Export {
    /// The whole `GET /client/features` body for these features.
    pub fn body<'a>(
        &self,
        features: impl IntoIterator<Item = &'a Feature>,
        mode: Segments,
    ) -> Json {
        let features: Vec<&Feature> = features.into_iter().collect();
        let mut out = self.envelope(features.iter().copied(), mode);
        if let Some(slot) = out.get_mut("features") {
            *slot = features
                .iter()
                .map(|f| self.feature_json(f, mode))
                .collect::<Vec<_>>()
                .into();
        }
        out
    }

    /// The body around these features: `version`, an empty `features` array, the segments
    /// they use (when sent separately) and `query`. Servers join pre-serialised features
    /// into it.
    pub fn envelope<'a>(
        &self,
        features: impl IntoIterator<Item = &'a Feature>,
        mode: Segments,
    ) -> Json {
        let mut out = Map::new();
        out.insert("version".into(), 2.into());
        out.insert("features".into(), Json::Array(Vec::new()));
        if mode == Segments::Separate {
            let used: BTreeSet<usize> = features
                .into_iter()
                .flat_map(|f| &f.strategies)
                .flat_map(|s| &s.atoms)
                .filter_map(|a| match a {
                    Atom::Segment(i) => Some(*i),
                    Atom::Constraint(_) => None,
                })
                .collect();
            let segments: Vec<Json> = used
                .into_iter()
                .filter_map(|i| {
                    let constraints = self.segments.get(i)?.as_ref()?;
                    Some(json!({
                        "id": i + 1,
                        "name": self.names.get(i).map_or("", |n| &**n),
                        "constraints": constraints.iter().map(Constraint::to_json).collect::<Vec<_>>(),
                    }))
                })
                .collect();
            out.insert("segments".into(), segments.into());
        }
        out.insert(
            "query".into(),
            json!({ "inlineSegmentConstraints": mode == Segments::Inline }),
        );
        Json::Object(out)
    }

    /// One feature object.
    pub fn feature_json(&self, feature: &Feature, mode: Segments) -> Json {
        serde_json::to_value(FeatureView {
            export: self,
            feature,
            mode,
        })
        .unwrap_or(Json::Null)
    }

    /// One feature object, serialised straight into `out` (no intermediate tree: servers
    /// serialise every feature of a snapshot at swap time).
    pub fn write_feature(&self, feature: &Feature, mode: Segments, out: &mut Vec<u8>) {
        let view = FeatureView {
            export: self,
            feature,
            mode,
        };
        // Writing to a Vec cannot fail, and every key is a string.
        let _ = serde_json::to_writer(out, &view);
    }
}

struct FeatureView<'a> {
    export: &'a Export,
    feature: &'a Feature,
    mode: Segments,
}

impl Serialize for FeatureView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let f = self.feature;
        let mut m = s.serialize_map(Some(10))?;
        m.serialize_entry("name", &*f.name)?;
        m.serialize_entry("type", "release")?;
        m.serialize_entry("description", &f.description)?;
        m.serialize_entry("enabled", &f.enabled)?;
        m.serialize_entry("stale", &false)?;
        m.serialize_entry("impressionData", &false)?;
        m.serialize_entry("project", "default")?;
        let strategies: Vec<StrategyView<'_>> = f
            .strategies
            .iter()
            .map(|strategy| StrategyView {
                export: self.export,
                strategy,
                mode: self.mode,
            })
            .collect();
        m.serialize_entry("strategies", &strategies)?;
        m.serialize_entry("variants", &f.variants)?;
        m.serialize_entry("dependencies", &[] as &[Json])?;
        m.end()
    }
}

struct StrategyView<'a> {
    export: &'a Export,
    strategy: &'a Strategy,
    mode: Segments,
}

impl Serialize for StrategyView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let strategy = self.strategy;
        let mut constraints: Vec<&Constraint> = Vec::new();
        let mut segment_ids: Vec<usize> = Vec::new();
        for atom in &strategy.atoms {
            match atom {
                Atom::Constraint(c) => constraints.push(c),
                Atom::Segment(i) => match self.mode {
                    Segments::Separate => segment_ids.push(i + 1),
                    Segments::Inline => constraints.extend(
                        self.export
                            .segments
                            .get(*i)
                            .and_then(Option::as_ref)
                            .into_iter()
                            .flatten(),
                    ),
                },
            }
        }
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("name", strategy.name)?;
        m.serialize_entry("constraints", &constraints)?;
        m.serialize_entry("parameters", &Parameters(&strategy.parameters))?;
        if self.mode == Segments::Separate {
            m.serialize_entry("segments", &segment_ids)?;
        }
        m.serialize_entry("variants", &strategy.variants)?;
        m.end()
    }
}

/// Strategy parameters: a JSON object of strings.
struct Parameters<'a>(&'a [(&'static str, String)]);

impl Serialize for Parameters<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}
