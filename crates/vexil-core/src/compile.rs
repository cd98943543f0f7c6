//! Source files -> diagnostics and, when there is no error, an immutable `Snapshot`.
//!
//! Per-file checks live in `format`; this module does what needs the whole set: namespaces
//! spread over files, duplicate and case-conflicting keys, segment references, include cycles,
//! unused segments, expiry, and the revision id.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::config::{self, CONFIG_FILE, RepoConfig};
use crate::decode::closest;
use crate::diag::{Code, Diagnostic, Pos, Sink, has_errors};
use crate::format::{self, FileDef, FlagDef, SegmentDef};
use crate::snapshot::{FastMap, Matcher, Namespace, Segment, Snapshot};
use crate::source::SourceFile;
use crate::yaml;

/// How deep segment includes may nest (deeper chains are almost certainly a mistake).
pub const MAX_INCLUDE_DEPTH: usize = 32;

#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// The date expiry warnings compare against; `None` skips them (keeps tests reproducible).
    pub today: Option<jiff::civil::Date>,
    /// The client names the repository config (`vexil.yaml`) may declare: the mirrors' names,
    /// which the core does not know (`vexil_mirror::Mirror::names()`); `None` accepts any.
    pub clients: Option<&'static [&'static str]>,
}

/// The outcome of compiling a set of files.
#[derive(Debug)]
pub struct Compiled {
    /// `Some` exactly when there is no error-level diagnostic.
    pub snapshot: Option<Snapshot>,
    /// Sorted by file, line, column.
    pub diagnostics: Vec<Diagnostic>,
}

/// Each file's decoded definitions and diagnostics from the previous compile, so that a reload
/// parses only the files that changed (parsing and per-file checks are most of a compile).
#[derive(Debug, Default)]
pub struct FileCache {
    files: FastMap<String, CachedFile>,
}

#[derive(Debug)]
struct CachedFile {
    text: String,
    def: FileDef,
    diagnostics: Vec<Diagnostic>,
}

pub fn compile(files: &[SourceFile], options: &CompileOptions) -> Compiled {
    compile_files(files, options, None)
}

/// `compile`, reusing the files of `cache` whose text is unchanged; the cache then holds
/// exactly the flag files of `files` (the small config file is decoded every time).
pub fn compile_cached(
    files: &[SourceFile],
    options: &CompileOptions,
    cache: &mut FileCache,
) -> Compiled {
    compile_files(files, options, Some(cache))
}

/// One file's definitions and diagnostics.
/// `clients` checks the flags' own `clients:` lists as the config's are checked; it is one list
/// per process (the mirrors'), so a cached file never holds names checked against another.
fn decode_source(file: &SourceFile, clients: Option<&[&str]>) -> (FileDef, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let mut sink = Sink::new(&file.path, &mut diagnostics);
    let def = match yaml::parse(&file.text) {
        Ok(root) => format::decode_file(&mut sink, &root, clients),
        Err(e) => {
            sink.error(e.pos, e.code, e.message);
            FileDef::empty()
        }
    };
    (def, diagnostics)
}

fn compile_files(
    files: &[SourceFile],
    options: &CompileOptions,
    mut cache: Option<&mut FileCache>,
) -> Compiled {
    let mut diagnostics = Vec::new();
    let mut namespaces: BTreeMap<String, NsDefs<'_>> = BTreeMap::new();
    let mut kept: FastMap<String, CachedFile> = FastMap::default();
    let mut config = RepoConfig::default();
    for file in files {
        if config::is_reserved(&file.path) {
            let mut sink = Sink::new(&file.path, &mut diagnostics);
            if file.path == CONFIG_FILE {
                config = match yaml::parse(&file.text) {
                    Ok(root) => config::decode(&mut sink, &root, options.clients),
                    Err(e) => {
                        sink.error(e.pos, e.code, e.message);
                        RepoConfig::default()
                    }
                };
            } else {
                config::misplaced(&mut sink);
            }
            continue;
        }
        let hit = cache
            .as_deref_mut()
            .and_then(|c| c.files.remove(&file.path))
            .filter(|c| c.text == file.text);
        let (def, file_diagnostics) = match hit {
            Some(cached) => {
                let out = (cached.def.clone(), cached.diagnostics.clone());
                kept.insert(file.path.clone(), cached);
                out
            }
            None => {
                let (def, file_diagnostics) = decode_source(file, options.clients);
                if cache.is_some() {
                    let cached = CachedFile {
                        text: file.text.clone(),
                        def: def.clone(),
                        diagnostics: file_diagnostics.clone(),
                    };
                    kept.insert(file.path.clone(), cached);
                }
                (def, file_diagnostics)
            }
        };
        diagnostics.extend(file_diagnostics);
        let ns = namespaces.entry(def.namespace).or_default();
        ns.flags
            .extend(def.flags.into_iter().map(|f| (file.path.as_str(), f)));
        ns.segments
            .extend(def.segments.into_iter().map(|s| (file.path.as_str(), s)));
    }

    if let Some(cache) = cache {
        cache.files = kept;
    }

    let defined: Vec<&str> = namespaces.keys().map(String::as_str).collect();
    config::check_namespaces(
        &mut Sink::new(CONFIG_FILE, &mut diagnostics),
        &config,
        &defined,
    );
    let mut built = Vec::with_capacity(namespaces.len());
    for (name, defs) in namespaces {
        built.push(build_namespace(name, defs, options, &mut diagnostics));
    }
    if has_errors(&diagnostics) {
        // Warnings about unused segments may only reflect a flag that failed to decode.
        diagnostics.retain(|d| d.code != Code::UnusedSegment);
    }
    diagnostics.sort();
    let snapshot = (!has_errors(&diagnostics)).then(|| {
        let namespace_index = index_by(&built, |ns| &ns.name);
        Snapshot {
            revision: revision(files),
            namespaces: built,
            namespace_index,
            config,
            derived: Default::default(),
        }
    });
    Compiled {
        snapshot,
        diagnostics,
    }
}

/// A content hash of the files (path and text), independent of their order.
pub fn revision(files: &[SourceFile]) -> String {
    let mut sorted: Vec<&SourceFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut hasher = Sha256::new();
    for f in sorted {
        hasher.update((f.path.len() as u64).to_le_bytes());
        hasher.update(f.path.as_bytes());
        hasher.update((f.text.len() as u64).to_le_bytes());
        hasher.update(f.text.as_bytes());
    }
    let digest = hasher.finalize();
    let mut hex = String::with_capacity(40);
    for b in digest.iter().take(20) {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// Position of each item by its name, for lookups by name on the evaluation path.
fn index_by<T>(items: &[T], name: impl Fn(&T) -> &str) -> FastMap<Box<str>, usize> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| (name(item).into(), i))
        .collect()
}

#[derive(Debug, Default)]
struct NsDefs<'f> {
    flags: Vec<(&'f str, FlagDef)>,
    segments: Vec<(&'f str, SegmentDef)>,
}

fn err(out: &mut Vec<Diagnostic>, file: &str, pos: Pos, code: Code, message: String) {
    Sink::new(file, out).error(pos, code, message);
}

fn warn(out: &mut Vec<Diagnostic>, file: &str, pos: Pos, code: Code, message: String) {
    Sink::new(file, out).warning(pos, code, message);
}

/// Reports exact duplicates and keys that differ only in case; returns the indices to keep.
fn unique_keys<'a>(
    items: impl Iterator<Item = (&'a str, &'a str, Pos)>,
    kind: &str,
    duplicate: Code,
    out: &mut Vec<Diagnostic>,
) -> Vec<bool> {
    let mut seen: FastMap<String, (&str, &str, Pos)> = FastMap::default();
    let mut keep = Vec::new();
    for (file, key, pos) in items {
        let folded = key.to_ascii_lowercase();
        match seen.get(&folded) {
            Some((first_file, first_key, first_pos)) => {
                let (code, what) = if *first_key == key {
                    (duplicate, format!("{kind} `{key}` is defined twice"))
                } else {
                    (
                        Code::CaseConflict,
                        format!("{kind} `{key}` differs only in case from `{first_key}`"),
                    )
                };
                err(
                    out,
                    file,
                    pos,
                    code,
                    format!(
                        "{what}: first at {first_file}:{}:{}",
                        first_pos.line, first_pos.column
                    ),
                );
                keep.push(false);
            }
            None => {
                seen.insert(folded, (file, key, pos));
                keep.push(true);
            }
        }
    }
    keep
}

fn build_namespace(
    name: String,
    defs: NsDefs<'_>,
    options: &CompileOptions,
    out: &mut Vec<Diagnostic>,
) -> Namespace {
    let keep_flags = unique_keys(
        defs.flags.iter().map(|(f, d)| (*f, d.key.as_str(), d.pos)),
        "flag",
        Code::DuplicateFlag,
        out,
    );
    let keep_segments = unique_keys(
        defs.segments
            .iter()
            .map(|(f, s)| (*f, s.key.as_str(), s.pos)),
        "segment",
        Code::DuplicateSegment,
        out,
    );
    let seg_defs: Vec<(&str, SegmentDef)> = defs
        .segments
        .into_iter()
        .zip(keep_segments)
        .filter(|(_, k)| *k)
        .map(|(s, _)| s)
        .collect();
    let seg_index: FastMap<&str, usize> = seg_defs
        .iter()
        .enumerate()
        .map(|(i, (_, s))| (s.key.as_str(), i))
        .collect();
    let seg_names: Vec<&str> = seg_defs.iter().map(|(_, s)| s.key.as_str()).collect();
    let mut used = vec![false; seg_defs.len()];

    // Includes, flattened: a segment's members are its own plus every included segment's.
    let mut closure = Closure {
        defs: &seg_defs,
        index: &seg_index,
        names: &seg_names,
        namespace: &name,
        state: vec![State::New; seg_defs.len()],
        stack: Vec::new(),
    };
    let mut segments = Vec::with_capacity(seg_defs.len());
    for i in 0..seg_defs.len() {
        let members = closure.of(i, &mut used, out);
        let Some((file, def)) = seg_defs.get(i) else {
            continue;
        };
        let member_defs = || {
            members
                .iter()
                .filter_map(|&j| seg_defs.get(j).map(|(_, d)| d))
        };
        segments.push(Segment {
            key: def.key.as_str().into(),
            description: def.description.clone(),
            ids: member_defs()
                .flat_map(|d| d.ids.iter().map(|(s, _)| s.as_str().into()))
                .collect(),
            groups: member_defs().filter_map(|d| d.conditions.clone()).collect(),
            include: def.include.iter().map(|(s, _)| s.as_str().into()).collect(),
            origin: crate::snapshot::Origin {
                file: (*file).to_owned(),
                pos: def.pos,
            },
        });
    }

    let mut flags = Vec::new();
    for ((file, mut def), keep) in defs.flags.into_iter().zip(keep_flags) {
        if !keep {
            continue;
        }
        for r in &def.segment_refs {
            let mut indices = Vec::with_capacity(r.names.len());
            for (seg, pos) in &r.names {
                match seg_index.get(seg.as_str()) {
                    Some(&i) => {
                        indices.push(i);
                        if let Some(u) = used.get_mut(i) {
                            *u = true;
                        }
                    }
                    None => err(
                        out,
                        file,
                        *pos,
                        Code::UnknownSegment,
                        unknown_segment(seg, &name, &seg_names),
                    ),
                }
            }
            let rule = r.rule.and_then(|i| def.flag.as_mut()?.rules.get_mut(i));
            if let Some(Matcher::Segments(_, slot)) =
                rule.and_then(|rule| rule.matchers.get_mut(r.matcher))
            {
                *slot = indices;
            }
        }
        let Some(flag) = def.flag else { continue };
        if let (Some(expires), Some(today)) = (flag.expires, options.today) {
            if expires < today {
                warn(
                    out,
                    file,
                    def.pos,
                    Code::ExpiredFlag,
                    format!(
                        "flag `{}` expired on {expires}: remove it (and its uses in code), or move `expires` later",
                        flag.key
                    ),
                );
            }
        }
        flags.push(flag);
    }
    for ((file, def), used) in seg_defs.iter().zip(&used) {
        if !used {
            warn(
                out,
                file,
                def.pos,
                Code::UnusedSegment,
                format!("segment `{}` is not used by any flag or segment", def.key),
            );
        }
    }
    flags.sort_by(|a, b| a.key.cmp(&b.key));
    let flag_index = index_by(&flags, |f| &f.key);
    Namespace {
        name: name.into(),
        flags,
        segments,
        flag_index,
    }
}

fn unknown_segment(seg: &str, namespace: &str, names: &[&str]) -> String {
    let hint = match closest(seg, names) {
        Some(best) => format!("; did you mean `{best}`?"),
        None if names.is_empty() => format!("; namespace `{namespace}` defines no segments"),
        None => String::new(),
    };
    format!("unknown segment `{seg}` in namespace `{namespace}`{hint}")
}

#[derive(Debug, Clone)]
enum State {
    New,
    InProgress,
    Done(BTreeSet<usize>),
}

/// Computes include closures with cycle detection (depth-first, memoised).
struct Closure<'a, 'f> {
    defs: &'a [(&'f str, SegmentDef)],
    index: &'a FastMap<&'a str, usize>,
    names: &'a [&'a str],
    namespace: &'a str,
    state: Vec<State>,
    /// The include path being explored, to name a cycle.
    stack: Vec<usize>,
}

impl Closure<'_, '_> {
    /// Segment `i` and every segment it includes, directly or not.
    fn of(&mut self, i: usize, used: &mut [bool], out: &mut Vec<Diagnostic>) -> BTreeSet<usize> {
        match self.state.get(i) {
            Some(State::Done(set)) => return set.clone(),
            Some(State::InProgress) | None => return BTreeSet::new(),
            Some(State::New) => {}
        }
        let Some((file, def)) = self.defs.get(i) else {
            return BTreeSet::new();
        };
        let file = *file;
        if let Some(s) = self.state.get_mut(i) {
            *s = State::InProgress;
        }
        self.stack.push(i);
        let mut set = BTreeSet::from([i]);
        for (inc, pos) in &def.include {
            let Some(&j) = self.index.get(inc.as_str()) else {
                err(
                    out,
                    file,
                    *pos,
                    Code::UnknownSegment,
                    unknown_segment(inc, self.namespace, self.names),
                );
                continue;
            };
            if let Some(u) = used.get_mut(j) {
                *u = true;
            }
            if matches!(self.state.get(j), Some(State::InProgress)) {
                let start = self.stack.iter().position(|&k| k == j).unwrap_or(0);
                let mut path: Vec<&str> = self
                    .stack
                    .iter()
                    .skip(start)
                    .filter_map(|&k| self.names.get(k).copied())
                    .collect();
                path.push(inc);
                err(
                    out,
                    file,
                    *pos,
                    Code::SegmentCycle,
                    format!("segment includes form a cycle: {}", path.join(" -> ")),
                );
                continue;
            }
            if self.stack.len() >= MAX_INCLUDE_DEPTH {
                err(
                    out,
                    file,
                    *pos,
                    Code::SegmentCycle,
                    format!("segment includes nest deeper than {MAX_INCLUDE_DEPTH} levels"),
                );
                continue;
            }
            set.extend(self.of(j, used, out));
        }
        self.stack.pop();
        if let Some(s) = self.state.get_mut(i) {
            *s = State::Done(set.clone());
        }
        set
    }
}

#[cfg(test)]
mod cache_tests {
    use super::{CompileOptions, FileCache, compile, compile_cached};
    use crate::source::from_memory;

    /// A sequence of repository states: compiling with the cache must give what a fresh
    /// compile gives at every step (edits, an error and its fix, a removed file, a rename).
    #[test]
    fn cached_compiles_equal_fresh_compiles() {
        let a1 = "segments:\n  s: { ids: [u1] }\nflags:\n  a: { rules: [{ segment: s, serve: true }] }\n";
        let a2 = "segments:\n  s: { ids: [u2] }\nflags:\n  a: { rules: [{ segment: s, serve: true }] }\n";
        let b = "flags:\n  b: { default: true }\n";
        let broken = "flags:\n  b: { defualt: true }\n";
        let other_ns = "namespace: n2\nflags:\n  c: {}\n";
        let steps: [&[(&str, &str)]; 7] = [
            &[("a.yaml", a1), ("b.yaml", b)],
            &[("a.yaml", a2), ("b.yaml", b)],
            &[("a.yaml", a2), ("b.yaml", broken)],
            &[("a.yaml", a2), ("b.yaml", b), ("n2.yaml", other_ns)],
            &[("a.yaml", a2), ("c.yaml", b), ("n2.yaml", other_ns)],
            &[("a.yaml", a2)],
            &[("a.yaml", a1), ("b.yaml", b)],
        ];
        let options = CompileOptions::default();
        let mut cache = FileCache::default();
        for (i, files) in steps.iter().enumerate() {
            let loaded = from_memory(files.iter().copied());
            let fresh = compile(&loaded.files, &options);
            let cached = compile_cached(&loaded.files, &options, &mut cache);
            assert_eq!(fresh.diagnostics, cached.diagnostics, "step {i}");
            match (&fresh.snapshot, &cached.snapshot) {
                (Some(f), Some(c)) => {
                    assert_eq!(f.revision(), c.revision(), "step {i}");
                    assert!(crate::diff::flag_changes(Some(f), c).is_empty(), "step {i}");
                    assert_eq!(f.flag_count(), c.flag_count(), "step {i}");
                }
                (None, None) => {}
                _ => panic!("step {i}: one compile has a snapshot, the other not"),
            }
            assert_eq!(
                cache.files.len(),
                files.len(),
                "step {i}: the cache holds the files"
            );
        }
    }
}
