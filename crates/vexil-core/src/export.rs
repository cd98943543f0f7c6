//! Compiled flags and segments back in the flag file's shape (JSON), for listings and tooling.
//!
//! Segment references are written by name, rollouts as percentages, splits as weights: what the
//! author wrote, modulo defaults made explicit (`salt`, `serve`).

use serde_json::{Map, Value as Json, json};

use crate::snapshot::{
    BucketBy, Condition, Flag, Gate, Matcher, Mode, Namespace, Outcome, Rule, Segment,
};

/// A flag as its file would define it.
pub fn flag_definition(ns: &Namespace, flag: &Flag) -> Json {
    let mut out = Map::new();
    out.insert("type".into(), flag.flag_type.as_str().into());
    out.insert("enabled".into(), flag.enabled.into());
    if let Some(d) = &flag.description {
        out.insert("description".into(), d.as_str().into());
    }
    if let Some(o) = &flag.owner {
        out.insert("owner".into(), o.as_str().into());
    }
    if !flag.tags.is_empty() {
        out.insert("tags".into(), flag.tags.clone().into());
    }
    if let Some(e) = flag.expires {
        out.insert("expires".into(), e.to_string().into());
    }
    if !flag.metadata.is_empty() {
        let metadata: Map<String, Json> = flag
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.insert("metadata".into(), Json::Object(metadata));
    }
    if let Some(clients) = &flag.clients {
        let names: Vec<&str> = clients.iter().map(|c| &**c).collect();
        out.insert("clients".into(), names.into());
    }
    let variants: Map<String, Json> = flag
        .variants
        .iter()
        .map(|v| (v.name.to_string(), v.value.to_json()))
        .collect();
    out.insert("variants".into(), Json::Object(variants));
    out.insert(
        "default".into(),
        flag.default_variant().name.as_ref().into(),
    );
    let rules: Vec<Json> = flag.rules.iter().map(|r| rule(ns, flag, r)).collect();
    out.insert("rules".into(), rules.into());
    Json::Object(out)
}

/// A segment with its includes flattened (its `ids` and condition groups are its members').
pub fn segment_definition(segment: &Segment) -> Json {
    let mut out = Map::new();
    if let Some(d) = &segment.description {
        out.insert("description".into(), d.as_str().into());
    }
    let mut ids: Vec<&str> = segment.ids.iter().map(|s| &**s).collect();
    ids.sort_unstable();
    out.insert("ids".into(), ids.into());
    let groups: Vec<Json> = segment
        .groups
        .iter()
        .map(|(mode, conditions)| json!({ mode_name(*mode): conditions_json(conditions) }))
        .collect();
    out.insert("groups".into(), groups.into());
    if !segment.include.is_empty() {
        let include: Vec<&str> = segment.include.iter().map(|s| &**s).collect();
        out.insert("include".into(), include.into());
    }
    Json::Object(out)
}

fn rule(ns: &Namespace, flag: &Flag, rule: &Rule) -> Json {
    let mut out = Map::new();
    out.insert("name".into(), rule.name.as_ref().into());
    for matcher in &rule.matchers {
        match matcher {
            Matcher::Segments(mode, indices) => {
                let names: Vec<&str> = indices
                    .iter()
                    .filter_map(|&i| ns.segment(i).map(|s| &*s.key))
                    .collect();
                out.insert("segments".into(), json!({ mode_name(*mode): names }));
            }
            Matcher::Conditions(mode, conditions) => {
                out.insert(
                    "when".into(),
                    json!({ mode_name(*mode): conditions_json(conditions) }),
                );
            }
            Matcher::Ids(ids) => {
                let mut ids: Vec<&str> = ids.iter().map(|s| &**s).collect();
                ids.sort_unstable();
                out.insert("ids".into(), ids.into());
            }
            Matcher::Groups(groups) => {
                let groups: Vec<&str> = groups.iter().map(|s| &**s).collect();
                out.insert("groups".into(), groups.into());
            }
        }
    }
    match &rule.outcome {
        Outcome::Serve { variant, gate } => {
            out.insert("serve".into(), flag.variant(*variant).name.as_ref().into());
            match gate {
                Gate::Always => {}
                Gate::Rollout { threshold, bucket } => {
                    out.insert("rollout".into(), percent(*threshold));
                    bucket_json(&mut out, bucket);
                }
                Gate::PercentageOfTime { threshold } => {
                    out.insert("percentage_of_time".into(), percent(*threshold));
                }
            }
        }
        Outcome::Split { boundaries, bucket } => {
            let mut weights = Map::new();
            let mut previous = 0u32;
            for &(upper, variant) in boundaries {
                let weight = percent(upper.saturating_sub(previous));
                weights.insert(flag.variant(variant).name.to_string(), weight);
                previous = upper;
            }
            out.insert("split".into(), Json::Object(weights));
            bucket_json(&mut out, bucket);
        }
    }
    Json::Object(out)
}

fn bucket_json(out: &mut Map<String, Json>, bucket: &BucketBy) {
    if let Some(attr) = &bucket.attr {
        out.insert("bucket_by".into(), attr.full.as_ref().into());
    }
    out.insert("salt".into(), bucket.salt.as_ref().into());
    if bucket.hashing != crate::snapshot::Hashing::Vexil {
        out.insert("bucketing".into(), bucket.hashing.as_str().into());
    }
}

fn conditions_json(conditions: &[Condition]) -> Vec<Json> {
    conditions
        .iter()
        .map(|c| {
            let mut m = Map::new();
            m.insert("attr".into(), c.attr.full.as_ref().into());
            m.insert(c.op_name.into(), c.operand.clone());
            if c.ignore_case {
                m.insert("ignore_case".into(), true.into());
            }
            Json::Object(m)
        })
        .collect()
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::All => "all",
        Mode::Any => "any",
    }
}

/// Thousandths of a percent, as a JSON number (an integer when whole).
pub(crate) fn percent(thousandths: u32) -> Json {
    if thousandths.is_multiple_of(1000) {
        Json::from(thousandths / 1000)
    } else {
        Json::from(f64::from(thousandths) / 1000.0)
    }
}
