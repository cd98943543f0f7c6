//! Where flag files come from: a directory, a local git repository at a ref, or a remote git
//! repository; and the `Source` trait the reloader drives.
//!
//! Problems with single files become diagnostics (the rest of the files are still checked);
//! only a source that cannot be read at all is an error.

mod cache;
mod dir;
mod git;
mod known_hosts;
mod remote;
mod transport;

use std::collections::HashSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::diag::{Code, Diagnostic, Pos, Severity};

pub use dir::{DirOptions, DirSource};
pub use git::{GitOptions, GitSource, read_revision, read_tree};
pub use known_hosts::KnownHosts;
pub use remote::{RemoteOptions, RemoteSource, looks_like_commit_id};
pub use transport::{Credentials, set_git_ca_file, set_git_timeouts};

/// Called by a watching source when something may have changed.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// Fixed files held in memory (an embedded example repository, tests): read once, never change.
#[derive(Debug)]
pub struct MemorySource {
    name: String,
    files: Vec<(String, String)>,
}

impl MemorySource {
    pub fn new(name: impl Into<String>, files: Vec<(String, String)>) -> MemorySource {
        MemorySource {
            name: name.into(),
            files,
        }
    }
}

impl Source for MemorySource {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn next_poll(&self, _failures: u32) -> Duration {
        // Nothing can change; the reloader still wakes up now and then.
        Duration::from_secs(3600)
    }

    fn read(&mut self, known: Option<&str>, force: bool) -> Result<Option<Fetched>, SourceError> {
        let loaded = from_memory(self.files.iter().map(|(p, t)| (p.as_str(), t.as_str())));
        let revision = crate::compile::revision(&loaded.files);
        if !force && known == Some(revision.as_str()) {
            return Ok(None);
        }
        Ok(Some(Fetched { revision, loaded }))
    }
}

/// One read of a source: the revision and its files.
#[derive(Debug)]
pub struct Fetched {
    /// The commit id for git sources; a content hash (`compile::revision`) for a directory.
    pub revision: String,
    pub loaded: Loaded,
}

/// Where flag files come from. One `Reloader` thread drives a source: it calls `read` when
/// `watch` woke it (after `quiet_period` without further wake-ups), when `next_poll` has
/// passed, and when a reload is requested.
pub trait Source: Send + std::fmt::Debug {
    /// One line for logs and status, without secrets: "directory /srv/flags".
    fn describe(&self) -> String;

    /// Starts watching for changes, calling `wake` when something may have changed.
    /// Sources that only poll keep this default.
    fn watch(&mut self, _wake: Wake) -> Result<(), SourceError> {
        Ok(())
    }

    /// How long bursts of wake-ups must be quiet before a read.
    fn quiet_period(&self) -> Duration {
        Duration::ZERO
    }

    /// The wait before the next poll, after `failures` consecutive source errors.
    fn next_poll(&self, failures: u32) -> Duration;

    /// Reads the current state. `known` is the revision returned last: a source that can tell
    /// cheaply that it is still current returns `Ok(None)`, unless `force` is set.
    fn read(&mut self, known: Option<&str>, force: bool) -> Result<Option<Fetched>, SourceError>;

    /// Forgets whatever the source keeps between reads (an open repository), so the next read
    /// starts afresh. Called after `read` panicked: what it held may be inconsistent.
    fn reset(&mut self) {}

    /// Told after each swap: `revision` is now served. A source that keeps a cache records it
    /// there (for `last_served` in a later process); an error is reported, never fatal.
    fn served(&mut self, _revision: &str) -> Result<(), String> {
        Ok(())
    }

    /// The revision this source's cache recorded as served by an earlier process, read from
    /// the cache without the network; `None` when there is no such record. The reloader asks
    /// for it when nothing is served yet and the source cannot be read, or is invalid.
    fn last_served(&mut self) -> Option<Result<Fetched, SourceError>> {
        None
    }
}

/// Files larger than this are refused (real flag files are a few kilobytes).
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// More files than this under one root are refused.
pub const MAX_FILES: usize = 20_000;
/// Directory nesting followed at most.
const MAX_DIR_DEPTH: usize = 32;

/// A flag file's text, with its path relative to the flags root (`/`-separated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
}

/// Files read from a source, and the problems met while reading.
#[derive(Debug, Default)]
pub struct Loaded {
    pub files: Vec<SourceFile>,
    /// Flag tests (`*.test.yaml`), read with the same rules; never part of a snapshot.
    pub tests: Vec<SourceFile>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    /// A file (or directory) that could not be read as a flag file: an error at its start.
    pub(crate) fn problem(&mut self, path: &str, code: Code, message: String) {
        self.diagnostics.push(Diagnostic {
            file: path.to_owned(),
            pos: Pos::START,
            severity: Severity::Error,
            code,
            message,
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn running_out_of_descriptors_fails_the_read_and_judges_no_file() {
        use std::io::{Error, ErrorKind};
        // EMFILE and ENFILE (Linux numbers) and out-of-memory are the process's problem ...
        assert!(super::is_exhaustion(&Error::from_raw_os_error(24)));
        assert!(super::is_exhaustion(&Error::from_raw_os_error(23)));
        assert!(super::is_exhaustion(&Error::from(ErrorKind::OutOfMemory)));
        // ... a missing or unreadable file is the file's.
        assert!(!super::is_exhaustion(&Error::from(
            ErrorKind::PermissionDenied
        )));
        assert!(!super::is_exhaustion(&Error::from_raw_os_error(2)));
        let mut walk = super::Walk {
            root: std::path::PathBuf::from("/"),
            loaded: super::Loaded::default(),
            visited: std::collections::HashSet::new(),
            count: 0,
            exhausted: None,
        };
        walk.io_problem("a.yaml", "cannot read file", Error::from_raw_os_error(24));
        walk.io_problem(
            "b.yaml",
            "cannot read file",
            Error::from(ErrorKind::PermissionDenied),
        );
        assert_eq!(
            walk.exhausted.as_ref().map(|(p, _)| p.as_str()),
            Some("a.yaml")
        );
        assert_eq!(
            walk.loaded.diagnostics.len(),
            1,
            "{:?}",
            walk.loaded.diagnostics
        );
    }

    #[test]
    fn flag_paths() {
        assert!(super::is_flag_path("a.yaml"));
        assert!(super::is_flag_path("team/b.YML"));
        assert!(!super::is_flag_path("team/b.test.yaml"));
        assert!(!super::is_flag_path(".hidden/b.yaml"));
        assert!(!super::is_flag_path("a/.b.yaml"));
        assert!(!super::is_flag_path("README.md"));
    }

    /// Directories too deep and names that are not UTF-8 are diagnostics, never silently
    /// missing files; names that cannot be flag files are still ignored.
    #[cfg(unix)]
    #[test]
    fn every_entry_the_walk_cannot_read_is_a_diagnostic() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt as _;

        use crate::diag::Code;

        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let flag = "flags:\n  a:\n    type: boolean\n    default: true\n";
        std::fs::write(root.join("a.yaml"), flag).unwrap();
        let chain =
            |d: &str, n: usize| -> Vec<String> { (1..=n).map(|i| format!("{d}{i}")).collect() };
        // A flag file in the 32nd directory down is read; the 33rd directory is not, and says so.
        let read_deep = chain("d", super::MAX_DIR_DEPTH);
        let too_deep = chain("e", super::MAX_DIR_DEPTH + 1);
        for (dirs, file) in [(&read_deep, "ok.yaml"), (&too_deep, "lost.yaml")] {
            let dir = root.join(dirs.join("/"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(file), flag).unwrap();
        }
        let odd_dir = root.join(OsStr::from_bytes(b"caf\xe9"));
        std::fs::create_dir(&odd_dir).unwrap();
        std::fs::write(odd_dir.join("x.yaml"), flag).unwrap();
        std::fs::write(root.join(OsStr::from_bytes(b"f\xff.yaml")), flag).unwrap();
        std::fs::write(root.join(OsStr::from_bytes(b"notes\xff.txt")), "").unwrap();
        std::fs::create_dir(root.join(OsStr::from_bytes(b".hidden\xff"))).unwrap();

        let loaded = super::read_dir(root).unwrap();
        let files: Vec<&str> = loaded.files.iter().map(|f| f.path.as_str()).collect();
        let ok = format!("{}/ok.yaml", read_deep.join("/"));
        assert_eq!(files, ["a.yaml", ok.as_str()]);
        let mut codes: Vec<(String, Code)> = loaded
            .diagnostics
            .iter()
            .map(|d| (d.file.clone(), d.code))
            .collect();
        codes.sort();
        assert_eq!(
            codes,
            [
                ("caf\u{fffd}".to_owned(), Code::NameNotUtf8),
                (too_deep.join("/"), Code::DirectoryTooDeep),
                ("f\u{fffd}.yaml".to_owned(), Code::NameNotUtf8),
            ]
        );
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read flags root {path}: {source}")]
    Root {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("flags root {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("cannot watch {path}: {source}")]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
    /// A git operation failed; `what` says which, in words.
    #[error("{what}: {source}")]
    Git { what: String, source: git2::Error },
    #[error("{0}")]
    Credentials(String),
    /// A remote's cache directory cannot be created, cleared or written.
    #[error("cannot use the git cache directory {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A process-wide setting could not be applied (`set_git_timeouts`).
    #[error("{0}")]
    Settings(String),
    /// The process ran out of descriptors or memory while reading: nothing is known about the
    /// files (they are not judged invalid), and the next read tries again.
    #[error("cannot read {path}: {source} (out of resources; the next read tries again)")]
    Exhausted {
        path: String,
        source: std::io::Error,
    },
}

/// Errors that say nothing about a file and everything about the process: too many open
/// descriptors (EMFILE, ENFILE) or no memory.
fn is_exhaustion(e: &std::io::Error) -> bool {
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    e.kind() == std::io::ErrorKind::OutOfMemory || matches!(e.raw_os_error(), Some(ENFILE | EMFILE))
}

impl SourceError {
    pub(crate) fn git(what: impl Into<String>) -> impl FnOnce(git2::Error) -> SourceError {
        let what = what.into();
        move |source| SourceError::Git { what, source }
    }
}

/// True for the files Vexil reads as flag files (and the repository config, `vexil.yaml`,
/// which has a flag file's name and which `compile` tells apart).
pub fn is_flag_file(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    (lower.ends_with(".yaml") || lower.ends_with(".yml"))
        && !lower.ends_with(".test.yaml")
        && !lower.ends_with(".test.yml")
        && !name.starts_with('.')
}

/// True for a flag test file (`*.test.yaml`, `*.test.yml`), not hidden.
pub fn is_test_file(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    (lower.ends_with(".test.yaml") || lower.ends_with(".test.yml")) && !name.starts_with('.')
}

/// True for a path (relative to the flags root, `/`-separated) Vexil reads as a flag file:
/// a flag file name, with no hidden file or directory on the way.
pub fn is_flag_path(path: &str) -> bool {
    let mut parts = path.split('/').filter(|p| !p.is_empty() && *p != ".");
    let Some(name) = parts.next_back() else {
        return false;
    };
    parts.all(|dir| !dir.starts_with('.')) && is_flag_file(name)
}

/// Checks raw bytes (size, binary, UTF-8) and turns them into a source file.
pub fn check_bytes(path: &str, bytes: Vec<u8>, out: &mut Vec<Diagnostic>) -> Option<SourceFile> {
    let problem = |code, pos, message: String| Diagnostic {
        file: path.to_owned(),
        pos,
        severity: Severity::Error,
        code,
        message,
    };
    if bytes.len() > MAX_FILE_BYTES {
        out.push(problem(
            Code::FileTooLarge,
            Pos::START,
            format!(
                "file is {} bytes; flag files may be at most {MAX_FILE_BYTES} bytes: split it",
                bytes.len()
            ),
        ));
        return None;
    }
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        out.push(problem(
            Code::BinaryFile,
            pos_of(&bytes, at),
            "file contains a NUL byte: it looks binary, not YAML".into(),
        ));
        return None;
    }
    match String::from_utf8(bytes) {
        Ok(mut text) => {
            if text.starts_with('\u{feff}') {
                text.drain(..'\u{feff}'.len_utf8());
            }
            Some(SourceFile {
                path: path.to_owned(),
                text,
            })
        }
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            out.push(problem(
                Code::NotUtf8,
                pos_of(e.as_bytes(), at),
                "file is not valid UTF-8: save it as UTF-8".into(),
            ));
            None
        }
    }
}

/// Line and column of byte `at`, counting characters of the valid text before it.
fn pos_of(bytes: &[u8], at: usize) -> Pos {
    let before = bytes.get(..at).unwrap_or(bytes);
    let text = String::from_utf8_lossy(before);
    let line = text.matches('\n').count() + 1;
    let column = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Pos {
        line: u32::try_from(line).unwrap_or(u32::MAX),
        column: u32::try_from(column).unwrap_or(u32::MAX),
    }
}

/// Builds a source from in-memory files (tests, git trees, benchmarks); paths that are not
/// flag files (see `is_flag_path`) are skipped, as a directory walk would.
pub fn from_memory<P: AsRef<str>, B: Into<Vec<u8>>>(
    files: impl IntoIterator<Item = (P, B)>,
) -> Loaded {
    let mut loaded = Loaded::default();
    for (path, bytes) in files {
        let path = path.as_ref();
        let is_test = is_test_file(path.rsplit('/').next().unwrap_or(path))
            && path.split('/').all(|p| !p.starts_with('.') || p == ".");
        if !is_flag_path(path) && !is_test {
            continue;
        }
        if let Some(f) = check_bytes(path, bytes.into(), &mut loaded.diagnostics) {
            if is_test {
                loaded.tests.push(f);
            } else {
                loaded.files.push(f);
            }
        }
    }
    loaded.files.sort_by(|a, b| a.path.cmp(&b.path));
    loaded.tests.sort_by(|a, b| a.path.cmp(&b.path));
    loaded
}

/// Reads every flag file under `root`.
pub fn read_dir(root: &Path) -> Result<Loaded, SourceError> {
    let meta = std::fs::metadata(root).map_err(|source| SourceError::Root {
        path: root.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(SourceError::NotADirectory(root.to_owned()));
    }
    let canonical_root = root.canonicalize().map_err(|source| SourceError::Root {
        path: root.to_owned(),
        source,
    })?;
    let mut walk = Walk {
        root: canonical_root.clone(),
        loaded: Loaded::default(),
        visited: HashSet::new(),
        count: 0,
        exhausted: None,
    };
    walk.dir(&canonical_root, "", 0);
    if let Some((path, source)) = walk.exhausted {
        return Err(SourceError::Exhausted { path, source });
    }
    let mut loaded = walk.loaded;
    loaded.files.sort_by(|a, b| a.path.cmp(&b.path));
    loaded.tests.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(loaded)
}

/// `rel/name`, or `name` at the root.
fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_owned()
    } else {
        format!("{rel}/{name}")
    }
}

/// The message for a directory below `MAX_DIR_DEPTH` (shared by both walks).
fn too_deep_message() -> String {
    format!(
        "directory nested more than {MAX_DIR_DEPTH} levels below the flags root: not read (flag files in it would be missing); move it up"
    )
}

/// The message for a directory or flag file whose name is not UTF-8 (shared by both walks).
fn not_utf8_message(is_dir: bool) -> String {
    let what = if is_dir {
        "directory name is not valid UTF-8: not read (flag files in it would be missing)"
    } else {
        "file name is not valid UTF-8: not read"
    };
    format!("{what}; rename it (invalid bytes are shown as U+FFFD)")
}

struct Walk {
    root: PathBuf,
    loaded: Loaded,
    visited: HashSet<PathBuf>,
    count: usize,
    /// The first error that came from the process running out of resources (the read fails).
    exhausted: Option<(String, std::io::Error)>,
}

impl Walk {
    fn problem(&mut self, path: &str, code: Code, message: String) {
        self.loaded.problem(path, code, message);
    }

    /// An IO error at `path`: a diagnostic, unless the process is out of resources, which
    /// fails the whole read instead.
    fn io_problem(&mut self, path: &str, what: &str, e: std::io::Error) {
        if is_exhaustion(&e) {
            if self.exhausted.is_none() {
                self.exhausted = Some((path.to_owned(), e));
            }
            return;
        }
        self.problem(path, Code::Io, format!("{what}: {e}"));
    }

    fn dir(&mut self, dir: &Path, rel: &str, depth: usize) {
        if !self.visited.insert(dir.to_owned()) {
            // Reached again through a symbolic link (possibly a loop): its files are read once,
            // under the path met first.
            return;
        }
        if depth > MAX_DIR_DEPTH {
            // It may hold flag files, which would silently be missing from the revision.
            return self.problem(rel, Code::DirectoryTooDeep, too_deep_message());
        }
        // The root itself is shown as `.`.
        let shown = if rel.is_empty() { "." } else { rel };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => return self.io_problem(shown, "cannot read directory", e),
        };
        let mut names: Vec<(String, PathBuf)> = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    // The entries not listed may be flag files or directories of them. The
                    // listing cannot go on after an error (the directory stream ends).
                    self.io_problem(shown, "cannot list directory", e);
                    break;
                }
            };
            match entry.file_name().into_string() {
                Ok(name) if name.starts_with('.') => {}
                Ok(name) => names.push((name, entry.path())),
                Err(raw) => self.odd_name(&raw, &entry.path(), rel),
            }
        }
        names.sort();
        for (name, path) in names {
            let rel_path = join(rel, &name);
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                // Removed since it was listed: nothing is lost (the watch wakes a new read).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    self.io_problem(&rel_path, "cannot read entry", e);
                    continue;
                }
            };
            let target = if meta.file_type().is_symlink() {
                // ConfigMap mounts are symlinks inside the root; anything leading out is refused.
                match path.canonicalize() {
                    Ok(t) if t.starts_with(&self.root) => t,
                    Ok(t) => {
                        if t.is_dir() || is_flag_file(&name) {
                            self.problem(
                                &rel_path,
                                Code::SymlinkOutsideRoot,
                                format!(
                                    "symbolic link leads outside the flags root (to {}): refused",
                                    t.display()
                                ),
                            );
                        }
                        continue;
                    }
                    Err(e) => {
                        // A dangling link (or a loop of links) holds nothing; only one named
                        // like a flag file is worth a word.
                        if is_flag_file(&name) {
                            self.problem(&rel_path, Code::Io, format!("broken symbolic link: {e}"));
                        }
                        continue;
                    }
                }
            } else {
                path.clone()
            };
            if target.is_dir() {
                self.dir(&target, &rel_path, depth + 1);
            } else if is_flag_file(&name) || is_test_file(&name) {
                // Opening a pipe or a device named *.yaml could block forever: regular files only.
                if target.is_file() {
                    self.file(&target, &rel_path, is_test_file(&name));
                } else {
                    self.problem(&rel_path, Code::Io, "not a regular file: refused".into());
                }
            }
        }
    }

    /// An entry whose name is not UTF-8 cannot be given a path in a revision. A directory, or a
    /// file named like a flag file, would silently be missing: an error. Other files cannot be
    /// flag files and are ignored like any non-flag file.
    fn odd_name(&mut self, raw: &std::ffi::OsStr, path: &Path, rel: &str) {
        let name = raw.to_string_lossy();
        if name.starts_with('.') {
            return;
        }
        let is_dir = path.is_dir();
        if is_dir || is_flag_file(&name) || is_test_file(&name) {
            self.problem(
                &join(rel, &name),
                Code::NameNotUtf8,
                not_utf8_message(is_dir),
            );
        }
    }

    fn file(&mut self, path: &Path, rel: &str, is_test: bool) {
        self.count += 1;
        if self.count > MAX_FILES {
            if self.count == MAX_FILES + 1 {
                self.problem(
                    rel,
                    Code::TooManyFiles,
                    format!("more than {MAX_FILES} flag files under the root: refused"),
                );
            }
            return;
        }
        // Read at most one byte past the cap, however large the file is (or has become).
        let mut bytes = Vec::new();
        let read = std::fs::File::open(path)
            .and_then(|f| f.take(MAX_FILE_BYTES as u64 + 1).read_to_end(&mut bytes));
        match read {
            Ok(_) if bytes.len() > MAX_FILE_BYTES => self.problem(
                rel,
                Code::FileTooLarge,
                format!("file is larger than {MAX_FILE_BYTES} bytes, the most a flag file may be: split it"),
            ),
            Ok(_) => {
                if let Some(f) = check_bytes(rel, bytes, &mut self.loaded.diagnostics) {
                    if is_test {
                        self.loaded.tests.push(f);
                    } else {
                        self.loaded.files.push(f);
                    }
                }
            }
            Err(e) => self.io_problem(rel, "cannot read file", e),
        }
    }
}
