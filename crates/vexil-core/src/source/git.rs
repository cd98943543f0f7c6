//! A local git repository at a ref: the committed tree, never the working tree.
//!
//! New commits are noticed by polling the ref, which is a file read (cheap enough to do many
//! times a second); the revision is the commit id, so an unchanged ref costs no tree walk.

use std::path::PathBuf;
use std::time::Duration;

use git2::{ObjectType, Oid, Repository, Tree};

use super::{Fetched, Loaded, MAX_DIR_DEPTH, MAX_FILE_BYTES, MAX_FILES, Source, SourceError};
use super::{check_bytes, is_flag_file, is_test_file};
use crate::diag::{Code, Diagnostic, Pos, Severity};

#[derive(Debug, Clone)]
pub struct GitOptions {
    /// A branch, tag, commit id or any git revision (`HEAD`, `main`, `v1.2`, `refs/heads/x`).
    pub reference: String,
    /// The flags root inside the repository (`""` for the top).
    pub flags_dir: String,
    /// How often the ref is read.
    pub poll_interval: Duration,
}

impl Default for GitOptions {
    fn default() -> GitOptions {
        GitOptions {
            reference: "HEAD".into(),
            flags_dir: String::new(),
            poll_interval: Duration::from_millis(100),
        }
    }
}

pub struct GitSource {
    path: PathBuf,
    options: GitOptions,
    repo: Option<Repository>,
}

impl std::fmt::Debug for GitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSource")
            .field("path", &self.path)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl GitSource {
    pub fn new(path: impl Into<PathBuf>, options: GitOptions) -> GitSource {
        GitSource {
            path: path.into(),
            options,
            repo: None,
        }
    }

    fn read_inner(
        &mut self,
        known: Option<&str>,
        force: bool,
    ) -> Result<Option<Fetched>, SourceError> {
        let repo = match self.repo.take() {
            Some(repo) => repo,
            None => Repository::open(&self.path).map_err(SourceError::git(format!(
                "cannot open git repository {}",
                self.path.display()
            )))?,
        };
        let repo = self.repo.insert(repo);
        let commit = resolve(repo, &self.options.reference)?;
        let revision = commit.to_string();
        if !force && known == Some(revision.as_str()) {
            return Ok(None);
        }
        let loaded = read_commit(repo, commit, &self.options.flags_dir)?;
        Ok(Some(Fetched { revision, loaded }))
    }
}

impl Source for GitSource {
    fn describe(&self) -> String {
        format!(
            "git repository {} at {}{}",
            self.path.display(),
            self.options.reference,
            flags_dir_suffix(&self.options.flags_dir)
        )
    }

    fn next_poll(&self, _failures: u32) -> Duration {
        self.options.poll_interval
    }

    fn read(&mut self, known: Option<&str>, force: bool) -> Result<Option<Fetched>, SourceError> {
        let result = self.read_inner(known, force);
        if result.is_err() {
            // Open the repository afresh next time (it may have been replaced or repaired).
            self.repo = None;
        }
        result
    }
}

pub(super) fn flags_dir_suffix(flags_dir: &str) -> String {
    let dir = flags_dir.trim_matches('/');
    if dir.is_empty() {
        String::new()
    } else {
        format!(" (flags in {dir}/)")
    }
}

/// The commit a revision names (a branch, tag, commit id, `HEAD`, ...).
pub(super) fn resolve(repo: &Repository, reference: &str) -> Result<Oid, SourceError> {
    let object = repo
        .revparse_single(reference)
        .map_err(SourceError::git(format!("cannot resolve `{reference}`")))?;
    let commit = object
        .peel_to_commit()
        .map_err(SourceError::git(format!("`{reference}` is not a commit")))?;
    Ok(commit.id())
}

/// The flag files of a commit under `flags_dir`.
pub(super) fn read_commit(
    repo: &Repository,
    commit: Oid,
    flags_dir: &str,
) -> Result<Loaded, SourceError> {
    let tree = repo
        .find_commit(commit)
        .and_then(|c| c.tree())
        .map_err(SourceError::git(format!("cannot read commit {commit}")))?;
    let dir = flags_dir.trim_matches('/');
    if dir.is_empty() {
        return read_tree(repo, &tree);
    }
    let entry = match tree.get_path(std::path::Path::new(dir)) {
        Ok(entry) => entry,
        Err(e) if e.code() == git2::ErrorCode::NotFound => {
            return Ok(missing_dir(dir, commit));
        }
        Err(source) => {
            return Err(SourceError::Git {
                what: format!("cannot read {dir}/ in commit {commit}"),
                source,
            });
        }
    };
    if entry.kind() != Some(ObjectType::Tree) {
        return Ok(missing_dir(dir, commit));
    }
    let sub = repo
        .find_tree(entry.id())
        .map_err(SourceError::git(format!(
            "cannot read {dir}/ in commit {commit}"
        )))?;
    read_tree(repo, &sub)
}

fn missing_dir(dir: &str, commit: Oid) -> Loaded {
    Loaded {
        files: Vec::new(),
        tests: Vec::new(),
        diagnostics: vec![Diagnostic {
            file: format!("{dir}/"),
            pos: Pos::START,
            severity: Severity::Error,
            code: Code::MissingFlagsDir,
            message: format!("the flags directory `{dir}` is not in commit {commit}"),
        }],
    }
}

/// Reads every flag file of a git tree (paths relative to it), with the limits and file rules
/// of a directory walk. Bad files become diagnostics; a missing object is an error (the
/// repository is damaged).
pub fn read_tree(repo: &Repository, tree: &Tree<'_>) -> Result<Loaded, SourceError> {
    let odb = repo
        .odb()
        .map_err(SourceError::git("cannot open the object database"))?;
    let mut walk = TreeWalk {
        repo,
        odb,
        loaded: Loaded::default(),
        count: 0,
    };
    walk.tree(tree, "", 0)?;
    let mut loaded = walk.loaded;
    loaded.files.sort_by(|a, b| a.path.cmp(&b.path));
    loaded.tests.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(loaded)
}

struct TreeWalk<'r> {
    repo: &'r Repository,
    odb: git2::Odb<'r>,
    loaded: Loaded,
    count: usize,
}

impl TreeWalk<'_> {
    fn problem(&mut self, path: &str, code: Code, message: String) {
        self.loaded.problem(path, code, message);
    }

    fn tree(&mut self, tree: &Tree<'_>, rel: &str, depth: usize) -> Result<(), SourceError> {
        if depth > MAX_DIR_DEPTH {
            return Ok(());
        }
        for entry in tree.iter() {
            // Names that are not UTF-8 cannot be flag files (`.yaml` names are text).
            let Ok(name) = entry.name() else { continue };
            if name.starts_with('.') {
                continue;
            }
            let path = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            match entry.kind() {
                Some(ObjectType::Tree) => {
                    let sub = self
                        .repo
                        .find_tree(entry.id())
                        .map_err(SourceError::git(format!("cannot read tree {path}/")))?;
                    self.tree(&sub, &path, depth + 1)?;
                }
                Some(ObjectType::Blob) if is_flag_file(name) || is_test_file(name) => {
                    if entry.filemode() == i32::from(git2::FileMode::Link) {
                        self.problem(
                            &path,
                            Code::GitSymlink,
                            "symbolic links are not followed in git sources: commit the file itself"
                                .into(),
                        );
                    } else {
                        self.blob(entry.id(), &path, is_test_file(name))?;
                    }
                }
                // Submodules and other files are not flag files.
                _ => {}
            }
        }
        Ok(())
    }

    fn blob(&mut self, id: Oid, path: &str, is_test: bool) -> Result<(), SourceError> {
        self.count += 1;
        if self.count > MAX_FILES {
            if self.count == MAX_FILES + 1 {
                self.problem(
                    path,
                    Code::TooManyFiles,
                    format!("more than {MAX_FILES} flag files under the root: refused"),
                );
            }
            return Ok(());
        }
        // The header gives the size without loading a (possibly huge) blob.
        let (size, _) = self
            .odb
            .read_header(id)
            .map_err(SourceError::git(format!("cannot read {path}")))?;
        if size > MAX_FILE_BYTES {
            self.problem(
                path,
                Code::FileTooLarge,
                format!(
                    "file is {size} bytes; flag files may be at most {MAX_FILE_BYTES} bytes: split it"
                ),
            );
            return Ok(());
        }
        let blob = self
            .repo
            .find_blob(id)
            .map_err(SourceError::git(format!("cannot read {path}")))?;
        if let Some(file) = check_bytes(path, blob.content().to_vec(), &mut self.loaded.diagnostics)
        {
            if is_test {
                self.loaded.tests.push(file);
            } else {
                self.loaded.files.push(file);
            }
        }
        Ok(())
    }
}

/// The flags under `path` (a directory inside a git working tree, or the repository itself) as
/// committed at `rev`, without checking anything out. Returns the commit id and the files.
pub fn read_revision(path: &std::path::Path, rev: &str) -> Result<(String, Loaded), SourceError> {
    let repo = Repository::discover(path).map_err(SourceError::git(format!(
        "{} is not inside a git repository",
        path.display()
    )))?;
    let base = repo
        .workdir()
        .unwrap_or_else(|| repo.path())
        .canonicalize()
        .map_err(|source| SourceError::Root {
            path: path.to_owned(),
            source,
        })?;
    let target = path.canonicalize().map_err(|source| SourceError::Root {
        path: path.to_owned(),
        source,
    })?;
    let flags_dir = target
        .strip_prefix(&base)
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .unwrap_or_default();
    let commit = resolve(&repo, rev)?;
    let loaded = read_commit(&repo, commit, &flags_dir)?;
    Ok((commit.to_string(), loaded))
}
