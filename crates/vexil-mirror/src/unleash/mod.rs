//! Flags as the Unleash client API serves them (`GET /api/client/features`), for SDKs that
//! evaluate the definitions themselves.
//!
//! The mapping:
//! - A rule's matchers become constraints in disjunctive normal form: one strategy per
//!   conjunction (Unleash ORs strategies and ANDs the constraints of one). A segment that is a
//!   single conjunction becomes an Unleash segment; others are written out.
//! - A boolean flag is `is_enabled`: off by default, each rule that can serve true is one or
//!   more strategies (`default`, or `flexibleRollout` for rollouts and percentages of time). A
//!   rule serving false before one serving true, or a default of true with rules serving false,
//!   cannot be said (strategies only switch a flag on).
//! - Any other flag is `get_variant`: each rule, in order, is a strategy with strategy variants
//!   (the first matching strategy decides), then a catch-all strategy serving the default.
//! - The targeting key is `userId`; every other attribute is a context field of the same name.
//! - Rollouts and splits agree exactly only with `bucketing: unleash`; crc32 ones are exported
//!   as inexact.

mod constraints;
mod dnf;
mod re2;
mod translate;
mod wire;

pub use translate::{export, node_findings};
pub use wire::{Constraint, Export, Feature, Segments, Strategy};

use super::Mirror;

/// The capabilities of the clients an export is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// SDKs that send `Unleash-Client-Spec` (Unleash's engine, yggdrasil).
    Modern,
    /// SDKs that send none (ruby-unleash 3.2.5): `IN` and `NOT_IN` only, no strategy variants.
    Legacy,
}

impl Profile {
    pub fn mirror(self) -> Mirror {
        match self {
            Profile::Modern => Mirror::Unleash,
            Profile::Legacy => Mirror::UnleashLegacy,
        }
    }
}

/// The most strategies one flag may need before it is left out (disjunctive normal forms can
/// grow as a product).
const MAX_STRATEGIES: usize = 64;
