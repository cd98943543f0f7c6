//! The algebra of disjunctive normal forms: conjunctions, combinations and segments.

use vexil_core::snapshot::{Condition, Mode};

use super::constraints::condition_dnf;
use super::wire::{Atom, Constraint};
use super::{MAX_STRATEGIES, Profile};

pub(super) fn too_many() -> String {
    format!("needs more than {MAX_STRATEGIES} Unleash strategies")
}

/// The conjunction of two formulas in disjunctive normal form (`None` if too large).
pub(super) fn and<T: Clone>(a: &[Vec<T>], b: &[Vec<T>]) -> Option<Vec<Vec<T>>> {
    if a.len().saturating_mul(b.len()) > MAX_STRATEGIES {
        return None;
    }
    Some(
        a.iter()
            .flat_map(|x| {
                b.iter().map(move |y| {
                    let mut conj = x.clone();
                    conj.extend(y.iter().cloned());
                    conj
                })
            })
            .collect(),
    )
}

pub(super) fn combine<T: Clone>(mode: Mode, parts: Vec<Vec<Vec<T>>>) -> Option<Vec<Vec<T>>> {
    match mode {
        Mode::Any => {
            let all: Vec<Vec<T>> = parts.into_iter().flatten().collect();
            (all.len() <= MAX_STRATEGIES).then_some(all)
        }
        Mode::All => parts
            .iter()
            .try_fold(vec![Vec::new()], |acc, part| and(&acc, part)),
    }
}

/// A segment: its ids, or any of its condition groups.
pub(super) fn segment_dnf(
    segment: &vexil_core::snapshot::Segment,
    profile: Profile,
) -> Result<Vec<Vec<Constraint>>, String> {
    let mut out = Vec::new();
    if !segment.ids.is_empty() {
        let mut ids: Vec<String> = segment.ids.iter().map(ToString::to_string).collect();
        ids.sort_unstable();
        out.push(vec![Constraint::list("userId", "IN", ids)]);
    }
    for (mode, conditions) in &segment.groups {
        out.extend(conditions_dnf(*mode, conditions, profile)?);
    }
    if out.len() > MAX_STRATEGIES {
        return Err(too_many());
    }
    Ok(out)
}

pub(super) fn conditions_dnf<T: From<Constraint> + Clone>(
    mode: Mode,
    conditions: &[Condition],
    profile: Profile,
) -> Result<Vec<Vec<T>>, String> {
    let parts = conditions
        .iter()
        .map(|c| {
            condition_dnf(c, profile).map(|dnf| {
                dnf.into_iter()
                    .map(|conj| conj.into_iter().map(T::from).collect())
                    .collect()
            })
        })
        .collect::<Result<Vec<Vec<Vec<T>>>, String>>()?;
    combine(mode, parts).ok_or_else(too_many)
}

impl From<Constraint> for Atom {
    fn from(c: Constraint) -> Atom {
        Atom::Constraint(c)
    }
}
