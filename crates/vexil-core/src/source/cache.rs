//! The cache directory of a remote: its name, what a killed process leaves in it, and the
//! record of the revision it last served (read at start when the remote cannot be).

use std::path::{Path, PathBuf};

use git2::{Oid, Repository};
use sha2::{Digest as _, Sha256};

use super::transport::redact;

/// The record of the revision last served, beside the repository's files.
const SERVED_FILE: &str = "vexil-served";
/// Keeps the served commit (and its tree) in the cache whatever the fetched refs do.
const SERVED_REF: &str = "refs/vexil/served";

/// What a served revision is recorded for: the URL, the ref and the flags directory. A record
/// made for another of them is never used (another branch's flags are not this one's).
pub(super) fn served_key(url: &str, reference: Option<&str>, flags_dir: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [url, reference.unwrap_or(""), flags_dir] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex(&hasher.finalize())
}

/// Records `commit` as served (the ref first, so a record never names a commit the cache may
/// drop). The file is replaced atomically: a crash leaves the old record or the new one.
pub(super) fn record_served(
    repo: &Repository,
    cache: &Path,
    key: &str,
    commit: Oid,
) -> Result<(), String> {
    repo.reference(SERVED_REF, commit, true, "vexil: served")
        .map_err(|e| {
            format!(
                "cannot record the served revision in {}: {e}",
                cache.display()
            )
        })?;
    let file = cache.join(SERVED_FILE);
    let temp = cache.join(format!("{SERVED_FILE}.tmp"));
    std::fs::write(&temp, format!("key {key}\ncommit {commit}\n"))
        .and_then(|()| std::fs::rename(&temp, &file))
        .map_err(|e| {
            format!(
                "cannot record the served revision in {}: {e}",
                file.display()
            )
        })
}

/// The commit last served for `key`, if this cache recorded one.
pub(super) fn served(cache: &Path, key: &str) -> Option<Oid> {
    let text = std::fs::read_to_string(cache.join(SERVED_FILE)).ok()?;
    let mut recorded_key = None;
    let mut commit = None;
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("key", k)) => recorded_key = Some(k),
            Some(("commit", c)) => commit = Oid::from_str(c).ok(),
            _ => {}
        }
    }
    (recorded_key == Some(key)).then_some(commit).flatten()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One cache directory per URL: a readable stem and a hash (URLs may differ only in case).
pub(super) fn cache_name(url: &str) -> String {
    let stem: String = redact(url)
        .rsplit(['/', ':'])
        .find(|s| !s.is_empty())
        .unwrap_or("repo")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(40)
        .collect();
    let hash = hex(Sha256::digest(url.as_bytes()).get(..8).unwrap_or_default());
    format!("{stem}-{hash}")
}

/// Removes what libgit2 leaves in a cache when a process dies while writing (a SIGKILL during
/// a fetch), which nothing else ever removes: the pack being received
/// (`objects/pack/pack_git2_<16 hex digits>`, as large as the download) and the lock of its
/// index (`objects/pack/pack_git2_<12 hex digits>idx.lock`), a loose object being written
/// (`objects/tmp_object_git2_<16 hex digits>`), and the locks of files being updated
/// (`*.lock` under `refs/`, `packed-refs.lock`, `FETCH_HEAD.lock`, `HEAD.lock`,
/// `config.lock`), which would make every later fetch fail to update them. Names are from
/// libgit2 1.9 (`git_futils_mktmp`, `git_filebuf`). Only these names, only in this cache; a
/// cache directory belongs to one process (another's fetch in progress would lose its files).
pub(super) fn remove_stale_temporaries(cache: &Path) {
    let mut stale = Vec::new();
    let names = |dir: &Path| -> Vec<(String, PathBuf)> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok().map(|n| (n, e.path())))
            .collect()
    };
    for (name, path) in names(&cache.join("objects/pack")) {
        let temp = name.strip_prefix("pack_git2_").is_some_and(|rest| {
            is_hex(rest, 16) || rest.strip_suffix("idx.lock").is_some_and(|h| is_hex(h, 12))
        });
        if temp {
            stale.push(path);
        }
    }
    for (name, path) in names(&cache.join("objects")) {
        if name
            .strip_prefix("tmp_object_git2_")
            .is_some_and(|h| is_hex(h, 16))
        {
            stale.push(path);
        }
    }
    for (name, path) in names(cache) {
        if [
            "packed-refs.lock",
            "FETCH_HEAD.lock",
            "HEAD.lock",
            "config.lock",
        ]
        .contains(&name.as_str())
        {
            stale.push(path);
        }
    }
    // Refs nest (`refs/remotes/origin/team/x`); git refuses ref names this deep long before.
    let mut dirs = vec![(cache.join("refs"), 0usize)];
    while let Some((dir, depth)) = dirs.pop() {
        for (name, path) in names(&dir) {
            let Ok(kind) = std::fs::symlink_metadata(&path).map(|m| m.file_type()) else {
                continue;
            };
            if kind.is_dir() && depth < 64 {
                dirs.push((path, depth + 1));
            } else if kind.is_file() && name.ends_with(".lock") {
                stale.push(path);
            }
        }
    }
    for path in stale {
        // Best effort: a file that cannot be removed stays, as it would have without this.
        let _ = std::fs::remove_file(path);
    }
}

/// `s` is exactly `len` lower-case hex digits (libgit2's random suffixes).
fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    #[test]
    fn cache_names_differ_per_url() {
        let a = super::cache_name("file:///srv/flags");
        let b = super::cache_name("file:///srv/Flags");
        assert!(a.starts_with("flags-"), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn a_record_is_used_only_for_its_url_ref_and_flags_dir() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(dir.path()).unwrap();
        let tree = repo.treebuilder(None).unwrap().write().unwrap();
        let tree = repo.find_tree(tree).unwrap();
        let who = git2::Signature::now("t", "t@example.com").unwrap();
        let commit = repo.commit(None, &who, &who, "c", &tree, &[]).unwrap();
        let key = super::served_key("https://h/f.git", Some("main"), "");
        assert_eq!(super::served(dir.path(), &key), None);
        super::record_served(&repo, dir.path(), &key, commit).unwrap();
        assert_eq!(super::served(dir.path(), &key), Some(commit));
        for other in [
            super::served_key("https://h/g.git", Some("main"), ""),
            super::served_key("https://h/f.git", Some("release"), ""),
            super::served_key("https://h/f.git", None, ""),
            super::served_key("https://h/f.git", Some("main"), "flags"),
        ] {
            assert_eq!(super::served(dir.path(), &other), None);
        }
        assert_eq!(repo.refname_to_id("refs/vexil/served").unwrap(), commit);
    }
}
