//! A directory of flag files (a working tree, a Kubernetes ConfigMap mount), watched with notify.
//!
//! The whole tree is watched recursively, never single files: a watch on a file dies when an
//! editor saves by renaming, and ConfigMaps swap a `..data` symlink. Events only wake the
//! reloader; what counts is the content read afterwards, so a missed or spurious event costs at
//! most one rescan (and the periodic rescan catches anything missed).

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher as _};

use super::{Fetched, Source, SourceError, Wake, read_dir};

/// How often a missing or unwatchable root is looked at.
const FAILING_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct DirOptions {
    /// Wait for this long without events before reading (coalesces bursts and half-written saves).
    pub quiet_period: Duration,
    /// Rescan this often even without events: the safety net for missed events.
    pub rescan_interval: Duration,
}

impl Default for DirOptions {
    fn default() -> DirOptions {
        DirOptions {
            quiet_period: Duration::from_millis(250),
            rescan_interval: Duration::from_secs(60),
        }
    }
}

pub struct DirSource {
    root: PathBuf,
    options: DirOptions,
    wake: Option<Wake>,
    watcher: Option<notify::RecommendedWatcher>,
    /// The identity of the directory the watcher is on; a replaced root needs a new watch.
    watched: Option<FileId>,
}

impl std::fmt::Debug for DirSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirSource")
            .field("root", &self.root)
            .field("options", &self.options)
            .field("watching", &self.watcher.is_some())
            .finish()
    }
}

impl DirSource {
    pub fn new(root: impl Into<PathBuf>, options: DirOptions) -> DirSource {
        DirSource {
            root: root.into(),
            options,
            wake: None,
            watcher: None,
            watched: None,
        }
    }

    fn start_watch(&mut self) -> Result<(), SourceError> {
        let Some(wake) = self.wake.clone() else {
            return Ok(());
        };
        self.watcher = None;
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Our own reads show up as access events; anything else (and any error) may
                // mean a change.
                let relevant = event.map_or(true, |e| !matches!(e.kind, EventKind::Access(_)));
                if relevant {
                    wake();
                }
            })
            .map_err(|source| self.watch_error(source))?;
        watcher
            .watch(&self.root, RecursiveMode::Recursive)
            .map_err(|source| self.watch_error(source))?;
        self.watcher = Some(watcher);
        self.watched = file_id(&self.root);
        Ok(())
    }

    fn watch_error(&self, source: notify::Error) -> SourceError {
        SourceError::Watch {
            path: self.root.clone(),
            source,
        }
    }
}

impl Source for DirSource {
    fn describe(&self) -> String {
        format!("directory {}", self.root.display())
    }

    fn watch(&mut self, wake: Wake) -> Result<(), SourceError> {
        self.wake = Some(wake);
        // A root that does not exist yet (a ConfigMap not mounted yet) is watched once it does:
        // `read` retries, and polls quickly meanwhile.
        if self.start_watch().is_err() {
            self.watcher = None;
        }
        Ok(())
    }

    fn quiet_period(&self) -> Duration {
        self.options.quiet_period
    }

    fn next_poll(&self, failures: u32) -> Duration {
        if failures > 0 || (self.wake.is_some() && self.watcher.is_none()) {
            // The root is missing or unwatchable: look again soon.
            return self.options.rescan_interval.min(FAILING_POLL);
        }
        self.options.rescan_interval
    }

    fn read(&mut self, known: Option<&str>, force: bool) -> Result<Option<Fetched>, SourceError> {
        // A root that was removed and made again (or a watch that failed) is watched anew,
        // before reading, so that no change after the read goes unnoticed.
        let stale = self.watcher.is_none() || self.watched != file_id(&self.root);
        if self.wake.is_some() && stale && self.start_watch().is_err() {
            self.watcher = None;
        }
        let loaded = read_dir(&self.root)?;
        let revision = revision_of(&loaded);
        if !force && known == Some(revision.as_str()) {
            return Ok(None);
        }
        Ok(Some(Fetched { revision, loaded }))
    }
}

/// The content hash of the files read; problems met while reading (a binary file, a symlink
/// out of the root) are part of the state, so they change it too.
fn revision_of(loaded: &super::Loaded) -> String {
    if loaded.diagnostics.is_empty() {
        return crate::compile::revision(&loaded.files);
    }
    let mut with_problems = loaded.files.clone();
    with_problems.push(super::SourceFile {
        path: "\0read-problems".into(),
        text: loaded
            .diagnostics
            .iter()
            .map(|d| format!("{d}\n"))
            .collect(),
    });
    crate::compile::revision(&with_problems)
}

type FileId = (u64, u64);

#[cfg(unix)]
fn file_id(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(path: &Path) -> Option<FileId> {
    // Without inode numbers, only a root that disappeared is noticed (as a failed watch).
    std::fs::metadata(path).ok().map(|_| (0, 0))
}
