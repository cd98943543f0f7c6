//! The compiled, immutable snapshot: everything evaluation needs, prepared once.
//!
//! Invariants: a `Snapshot` only exists for a fully valid set of files; every index in it
//! (variant, segment) points inside its vectors; nothing in it changes after compilation.

use std::any::Any;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::diag::Pos;

pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// The type of a flag and of every value it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FlagType {
    Boolean,
    String,
    Integer,
    Float,
    Object,
}

impl FlagType {
    pub const ALL: [FlagType; 5] = [
        FlagType::Boolean,
        FlagType::String,
        FlagType::Integer,
        FlagType::Float,
        FlagType::Object,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FlagType::Boolean => "boolean",
            FlagType::String => "string",
            FlagType::Integer => "integer",
            FlagType::Float => "float",
            FlagType::Object => "object",
        }
    }

    pub fn parse(s: &str) -> Option<FlagType> {
        FlagType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// A value a flag serves.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    String(Box<str>),
    Integer(i64),
    Float(f64),
    /// Always a JSON object.
    Object(serde_json::Value),
}

impl Value {
    pub fn flag_type(&self) -> FlagType {
        match self {
            Value::Bool(_) => FlagType::Boolean,
            Value::String(_) => FlagType::String,
            Value::Integer(_) => FlagType::Integer,
            Value::Float(_) => FlagType::Float,
            Value::Object(_) => FlagType::Object,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::String(s) => serde_json::Value::String(s.to_string()),
            Value::Integer(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Value::Object(o) => o.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub name: Box<str>,
    pub value: Value,
}

/// Where a definition was written, for tooling and diagnostics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    pub file: String,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub struct Flag {
    pub key: Box<str>,
    pub flag_type: FlagType,
    pub enabled: bool,
    pub description: Option<String>,
    pub owner: Option<String>,
    pub tags: Vec<String>,
    pub expires: Option<jiff::civil::Date>,
    pub metadata: BTreeMap<String, serde_json::Value>,
    pub variants: Vec<Variant>,
    /// Index into `variants`.
    pub default: usize,
    pub rules: Vec<Rule>,
    /// The clients (mirror names) that read this flag, from its `clients:` field: replaces the
    /// repository config's declaration for this flag; `Some(empty)`: only Vexil's own APIs.
    pub clients: Option<Vec<Box<str>>>,
    pub origin: Origin,
}

impl Flag {
    pub fn default_variant(&self) -> &Variant {
        // `default` is checked at compile time; the fallback keeps this total without a panic path.
        self.variant(self.default)
    }

    pub fn variant(&self, index: usize) -> &Variant {
        self.variants
            .get(index)
            .unwrap_or_else(|| &FALLBACK_VARIANT)
    }

    /// True if the answer cannot depend on the context (OpenFeature's STATIC).
    pub fn is_static(&self) -> bool {
        !self.enabled || self.rules.is_empty()
    }
}

// Unreachable on a compiled snapshot (indices are checked at compile time); it keeps the
// accessors total without a panic path.
static FALLBACK_VARIANT: std::sync::LazyLock<Variant> = std::sync::LazyLock::new(|| Variant {
    name: "".into(),
    value: Value::Bool(false),
});

#[derive(Debug, Clone)]
pub struct Rule {
    /// The rule's `name`, or its 1-based position.
    pub name: Box<str>,
    /// All must hold.
    pub matchers: Vec<Matcher>,
    pub outcome: Outcome,
    pub origin: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    All,
    Any,
}

#[derive(Debug, Clone)]
pub enum Matcher {
    /// Indices into the namespace's segments.
    Segments(Mode, Vec<usize>),
    Conditions(Mode, Vec<Condition>),
    Ids(FastSet<Box<str>>),
    Groups(Vec<Box<str>>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Serve {
        variant: usize,
        gate: Gate,
    },
    Split {
        boundaries: Vec<(u32, usize)>,
        bucket: BucketBy,
    },
}

/// What else must hold for a `serve` rule to match.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    Always,
    /// Included iff bucket < threshold (thousandths of a percent).
    Rollout {
        threshold: u32,
        bucket: BucketBy,
    },
    /// Random on every call: rand(0..100_000) < threshold.
    PercentageOfTime {
        threshold: u32,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct BucketBy {
    /// `None`: the targeting key.
    pub attr: Option<AttrPath>,
    pub salt: Box<str>,
    pub hashing: Hashing,
}

/// How a value is hashed into a bucket (see shared reference bucketing.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Hashing {
    /// crc32 of salt + value, 100,000 buckets: Flipper's `percentage_of_actors`.
    #[default]
    Vexil,
    /// murmur3 of "salt:value" as Unleash SDKs hash (rollouts seed 0, splits seed 86028157), so
    /// Unleash clients reading the mirror agree exactly.
    Unleash,
    /// murmur3 of salt + value as flagd's `fractional` (v2) hashes it, on 100,000 buckets, so
    /// flagd's in-process providers agree exactly.
    Flagd,
}

impl Hashing {
    pub fn as_str(self) -> &'static str {
        match self {
            Hashing::Vexil => "vexil",
            Hashing::Unleash => "unleash",
            Hashing::Flagd => "flagd",
        }
    }
}

/// An attribute name, split once at compile time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    pub full: Box<str>,
    pub parts: Box<[Box<str>]>,
    pub is_targeting_key: bool,
}

impl AttrPath {
    pub fn new(name: &str) -> AttrPath {
        AttrPath {
            full: name.into(),
            parts: name.split('.').map(Into::into).collect(),
            is_targeting_key: name == "targeting_key",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Condition {
    pub attr: AttrPath,
    pub op: Op,
    /// The operator as written (`starts_with`, `semver_gte`, ...), for listings and mirrors.
    pub op_name: &'static str,
    /// The operand as written, for listings and mirrors.
    pub operand: serde_json::Value,
    pub ignore_case: bool,
}

/// A value compared with `equals`, prepared in every form an attribute may take.
#[derive(Debug, Clone)]
pub struct Scalar {
    /// Lower-cased when the condition ignores case.
    pub text: Box<str>,
    pub number: Option<f64>,
    pub boolean: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Lt,
    Lte,
    Gt,
    Gte,
}

#[derive(Debug, Clone)]
pub enum Op {
    Equals {
        value: Scalar,
        negate: bool,
    },
    In {
        texts: FastSet<Box<str>>,
        numbers: Vec<f64>,
        negate: bool,
    },
    StartsWith(Box<str>),
    EndsWith(Box<str>),
    Contains(Box<str>),
    /// Shared: a `Regex` clone would get a cache pool of its own (kilobytes per copy).
    Matches(std::sync::Arc<regex::Regex>),
    Number(Cmp, f64),
    Semver(Cmp, semver::Version),
    /// Seconds since the Unix epoch.
    Before(f64),
    After(f64),
    Present(bool),
}

/// A segment with its includes flattened: a member is in `ids`, or satisfies one of `groups`.
#[derive(Debug, Clone)]
pub struct Segment {
    pub key: Box<str>,
    pub description: Option<String>,
    pub ids: FastSet<Box<str>>,
    pub groups: Vec<(Mode, Vec<Condition>)>,
    /// Names as written, for listings and mirrors.
    pub include: Vec<Box<str>>,
    pub origin: Origin,
}

#[derive(Debug, Clone, Default)]
pub struct Namespace {
    pub name: Box<str>,
    /// Sorted by key.
    pub flags: Vec<Flag>,
    pub segments: Vec<Segment>,
    pub(crate) flag_index: FastMap<Box<str>, usize>,
}

impl Namespace {
    pub fn flag(&self, key: &str) -> Option<&Flag> {
        self.flag_index.get(key).and_then(|&i| self.flags.get(i))
    }

    /// The position of a flag in `flags` (stable for the life of the snapshot).
    pub fn flag_position(&self, key: &str) -> Option<usize> {
        self.flag_index.get(key).copied()
    }

    pub fn segment(&self, index: usize) -> Option<&Segment> {
        self.segments.get(index)
    }
}

/// An immutable, fully validated set of flags.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub(crate) revision: String,
    /// Sorted by name.
    pub(crate) namespaces: Vec<Namespace>,
    pub(crate) namespace_index: FastMap<Box<str>, usize>,
    /// The repository config file (`vexil.yaml`), compiled with the flags.
    pub(crate) config: crate::config::RepoConfig,
    /// What a server derived from this snapshot (tables, serialised bodies), built by
    /// `ReloadOptions::prepare` before the swap: readers never see the snapshot without it.
    pub(crate) derived: Derived,
}

/// A server's per-snapshot data, opaque to the core.
#[derive(Clone, Default)]
pub(crate) struct Derived(pub(crate) Option<Arc<dyn Any + Send + Sync>>);

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Derived(..)"
        } else {
            "Derived(none)"
        })
    }
}

impl Snapshot {
    /// What `ReloadOptions::prepare` built for this snapshot, if it is a `T`.
    pub fn derived<T: Any>(&self) -> Option<&T> {
        self.derived.0.as_deref()?.downcast_ref()
    }

    /// The revision id: a commit id for git sources, else a content hash of the files.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// What the repository config file declares (the default without one).
    pub fn config(&self) -> &crate::config::RepoConfig {
        &self.config
    }

    pub fn namespaces(&self) -> &[Namespace] {
        &self.namespaces
    }

    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespace_index
            .get(name)
            .and_then(|&i| self.namespaces.get(i))
    }

    /// The position of a namespace in `namespaces()` (stable for the life of the snapshot).
    pub fn namespace_position(&self, name: &str) -> Option<usize> {
        self.namespace_index.get(name).copied()
    }

    pub fn flag_count(&self) -> usize {
        self.namespaces.iter().map(|n| n.flags.len()).sum()
    }
}
