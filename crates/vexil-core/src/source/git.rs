//! A local git repository at a ref: the committed tree, never the working tree.
//!
//! New commits are noticed by polling the ref, which is a file read (cheap enough to do many
//! times a second); the revision is the commit id, so an unchanged ref costs no tree walk.

use std::path::PathBuf;
use std::time::Duration;

use git2::{ObjectType, Oid, Repository, Tree};

use super::{Fetched, Loaded, MAX_DIR_DEPTH, MAX_FILE_BYTES, MAX_FILES, Source, SourceError};
use super::{check_bytes, is_flag_file, is_test_file, join, not_utf8_message, too_deep_message};
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

    fn reset(&mut self) {
        self.repo = None;
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
    let mut walk = TreeWalk {
        repo,
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
    loaded: Loaded,
    count: usize,
}

impl TreeWalk<'_> {
    fn problem(&mut self, path: &str, code: Code, message: String) {
        self.loaded.problem(path, code, message);
    }

    fn tree(&mut self, tree: &Tree<'_>, rel: &str, depth: usize) -> Result<(), SourceError> {
        if depth > MAX_DIR_DEPTH {
            // It may hold flag files, which would silently be missing from the revision.
            self.problem(rel, Code::DirectoryTooDeep, too_deep_message());
            return Ok(());
        }
        for entry in tree.iter() {
            let (name, utf8) = match entry.name() {
                Ok(name) => (std::borrow::Cow::Borrowed(name), true),
                Err(_) => (String::from_utf8_lossy(entry.name_bytes()), false),
            };
            if name.starts_with('.') {
                continue;
            }
            let path = join(rel, &name);
            let kind = entry.kind();
            if !utf8 {
                // A path that is not text cannot name a file of a revision. A directory, or a
                // file named like a flag file, would silently be missing: an error. Other
                // files cannot be flag files and are ignored like any non-flag file.
                let is_dir = kind == Some(ObjectType::Tree);
                if is_dir || is_flag_file(&name) || is_test_file(&name) {
                    self.problem(&path, Code::NameNotUtf8, not_utf8_message(is_dir));
                }
                continue;
            }
            match kind {
                Some(ObjectType::Tree) => {
                    let sub = self
                        .repo
                        .find_tree(entry.id())
                        .map_err(SourceError::git(format!("cannot read tree {path}/")))?;
                    self.tree(&sub, &path, depth + 1)?;
                }
                Some(ObjectType::Blob) if entry.filemode() == i32::from(git2::FileMode::Link) => {
                    self.link(entry.id(), &path, &name)?;
                }
                Some(ObjectType::Blob) if is_flag_file(&name) || is_test_file(&name) => {
                    self.blob(entry.id(), &path, is_test_file(&name))?;
                }
                // A submodule's files are in another repository, never read here: flag files in
                // it would silently be missing.
                Some(ObjectType::Commit) => self.problem(
                    &path,
                    Code::GitSubmodule,
                    "submodules are not read in git sources (flag files in it would be missing): commit the files themselves"
                        .into(),
                ),
                // Other files are not flag files.
                _ => {}
            }
        }
        Ok(())
    }

    /// A symbolic link is never followed in a git tree. A link named like a flag file, or one
    /// that may lead to a directory (its target does not name a file with an extension), may
    /// stand for flag files, which would silently be missing: an error. A link to another kind
    /// of file (`README.md -> docs/README.md`) is ignored like that file would be.
    fn link(&mut self, id: Oid, path: &str, name: &str) -> Result<(), SourceError> {
        let flag_named = is_flag_file(name) || is_test_file(name);
        if !flag_named {
            let blob = self
                .repo
                .find_blob(id)
                .map_err(SourceError::git(format!("cannot read {path}")))?;
            // A link's blob is its target path; a huge one is no path.
            if blob.size() <= 4096 {
                let target = String::from_utf8_lossy(blob.content());
                let last = target
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .unwrap_or("");
                let names_a_file = !target.ends_with('/')
                    && last
                        .rfind('.')
                        .is_some_and(|dot| dot > 0 && dot + 1 < last.len());
                if names_a_file && !is_flag_file(last) && !is_test_file(last) {
                    return Ok(());
                }
            }
        }
        let message = if flag_named {
            "symbolic links are not followed in git sources: commit the file itself"
        } else {
            "symbolic link that may lead to a directory: links are not followed in git sources (flag files behind it would be missing); commit the files themselves"
        };
        self.problem(path, Code::GitSymlink, message.into());
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
        // Read whole before judging, even a blob too large to serve: its header alone (the
        // size it claims) is no proof, since a damaged object can claim any size, and a verdict
        // on a revision is remembered for its commit id, where it would outlive a repair.
        // libgit2 checks the hash of what it reads, so a damaged object fails here (a source
        // error: the commit is read again next time). An oversized blob costs one read per
        // new commit.
        let blob = self
            .repo
            .find_blob(id)
            .map_err(SourceError::git(format!("cannot read {path}")))?;
        if blob.size() > MAX_FILE_BYTES {
            self.problem(
                path,
                Code::FileTooLarge,
                format!(
                    "file is {} bytes; flag files may be at most {MAX_FILE_BYTES} bytes: split it",
                    blob.size()
                ),
            );
            return Ok(());
        }
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

#[cfg(test)]
mod tests {
    use git2::{FileMode, Oid, Repository};

    use super::{MAX_DIR_DEPTH, read_tree};
    use crate::diag::Code;

    const FLAG: &str = "flags:\n  a:\n    type: boolean\n    default: true\n";

    /// A tree (and the trees on its path) holding `leaf` under `dirs`, written bottom-up.
    fn nest(repo: &Repository, dirs: &[Vec<u8>], leaf: (&[u8], Oid, i32)) -> Oid {
        let mut builder = repo.treebuilder(None).unwrap();
        builder.insert(leaf.0, leaf.1, leaf.2).unwrap();
        let mut id = builder.write().unwrap();
        for dir in dirs.iter().rev() {
            let mut builder = repo.treebuilder(None).unwrap();
            builder.insert(dir.as_slice(), id, 0o040_000).unwrap();
            id = builder.write().unwrap();
        }
        id
    }

    fn codes(loaded: &crate::source::Loaded) -> Vec<(String, Code)> {
        let mut codes: Vec<_> = loaded
            .diagnostics
            .iter()
            .map(|d| (d.file.clone(), d.code))
            .collect();
        codes.sort();
        codes
    }

    #[test]
    fn every_entry_the_walk_cannot_read_is_a_diagnostic() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let flag = repo.blob(FLAG.as_bytes()).unwrap();
        let blob = i32::from(FileMode::Blob);
        // `d1/d2/.../dN`, built below `d1`.
        let names =
            |d: &str, n: usize| -> Vec<String> { (1..=n).map(|i| format!("{d}{i}")).collect() };
        let below = |names: &[String]| -> Vec<Vec<u8>> {
            names
                .iter()
                .skip(1)
                .map(|n| n.clone().into_bytes())
                .collect()
        };
        // A flag file in the 32nd directory down is read; the 33rd directory is not, and says so.
        let (read_deep, too_deep) = (names("d", MAX_DIR_DEPTH), names("e", MAX_DIR_DEPTH + 1));
        let read_deep_tree = nest(&repo, &below(&read_deep), (b"ok.yaml", flag, blob));
        let too_deep_tree = nest(&repo, &below(&too_deep), (b"lost.yaml", flag, blob));
        let odd_dir = nest(&repo, &[], (b"x.yaml", flag, blob));
        let link_to_dir = repo.blob(b"../elsewhere").unwrap();
        let link_to_doc = repo.blob(b"docs/README.md").unwrap();
        let submodule = Oid::from_str("0123456789012345678901234567890123456789").unwrap();

        let mut root = repo.treebuilder(None).unwrap();
        root.insert("a.yaml", flag, blob).unwrap();
        root.insert("d1", read_deep_tree, 0o040_000).unwrap();
        root.insert("e1", too_deep_tree, 0o040_000).unwrap();
        root.insert(b"caf\xe9".as_slice(), odd_dir, 0o040_000)
            .unwrap();
        root.insert(b"f\xff.yaml".as_slice(), flag, blob).unwrap();
        // Not UTF-8 but not a flag file, nor hidden: ignored like any other file.
        root.insert(b"notes\xff.txt".as_slice(), flag, blob)
            .unwrap();
        root.insert(b".hidden\xff".as_slice(), odd_dir, 0o040_000)
            .unwrap();
        root.insert("shared", link_to_dir, i32::from(FileMode::Link))
            .unwrap();
        root.insert("README.md", link_to_doc, i32::from(FileMode::Link))
            .unwrap();
        root.insert("vendored", submodule, i32::from(FileMode::Commit))
            .unwrap();
        let root = repo.find_tree(root.write().unwrap()).unwrap();

        let loaded = read_tree(&repo, &root).unwrap();
        let files: Vec<&str> = loaded.files.iter().map(|f| f.path.as_str()).collect();
        let ok = format!("{}/ok.yaml", read_deep.join("/"));
        assert_eq!(files, ["a.yaml", ok.as_str()]);
        let too_deep_path = too_deep.join("/");
        assert_eq!(
            codes(&loaded),
            [
                ("caf\u{fffd}".to_owned(), Code::NameNotUtf8),
                (too_deep_path, Code::DirectoryTooDeep),
                ("f\u{fffd}.yaml".to_owned(), Code::NameNotUtf8),
                ("shared".to_owned(), Code::GitSymlink),
                ("vendored".to_owned(), Code::GitSubmodule),
            ]
        );
    }

    #[test]
    fn an_oversized_blob_is_still_too_large() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let big = repo.blob(&vec![b'#'; super::MAX_FILE_BYTES + 1]).unwrap();
        let root = nest(&repo, &[], (b"big.yaml", big, i32::from(FileMode::Blob)));
        let loaded = read_tree(&repo, &repo.find_tree(root).unwrap()).unwrap();
        assert_eq!(
            codes(&loaded),
            [("big.yaml".to_owned(), Code::FileTooLarge)]
        );
    }
}
