//! Noticing policy edits (PRODUCT.md §10; PITFALLS.md "Policy reload").
//!
//! The *directory* is watched, never the file: editors replace files by renaming a
//! temporary over them, and Kubernetes updates a ConfigMap volume by re-pointing its
//! `..data` symlink to a fresh `..<timestamp>` directory, so a watch on the file itself
//! sees one event and then nothing. A policy directory is watched recursively (which also
//! covers the `..<timestamp>` directories); for a single policy file its parent directory
//! is watched, non-recursively. A content hash polled every `poll` backs up lost events.
//!
//! Reading a file makes inotify report an open and a close (and maybe an atime change):
//! those must not count, or every reload would cause the next one. Opens and read-closes
//! are ignored; metadata-only events wake the caller only when the content hash or the
//! permission bits of the directory's entries changed.
//!
//! The watcher only says "something may have changed": the caller reloads, validates, and
//! compares [`LoadedPolicy::hash`](crate::policy::load::LoadedPolicy::hash) to skip no-ops.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::os::unix::fs::PermissionsExt;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{new_debouncer, DebounceEventResult};
use tokio::sync::mpsc;

use crate::policy::load::fingerprint;

/// Why watching could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The file-system watch could not be set up.
    #[error("cannot watch {path}: {source}")]
    Notify {
        /// The directory we tried to watch.
        path: PathBuf,
        /// What notify said.
        #[source]
        source: notify::Error,
    },
}

/// Watches `path` (the policy directory, or for a single file its parent directory) and
/// sends `()` on `tx` (debounced by `debounce`) whenever anything there may have changed;
/// also polls every `poll` a content hash of the policy files (backup for lost events)
/// and triggers when it changed. Sends one `()` as soon as the watch is armed, so a change
/// made between the caller's first load and that moment is not lost. Notifications
/// coalesce: when one is already pending, another is not queued. Returns when `tx` is
/// closed.
pub async fn watch(
    path: PathBuf,
    debounce: Duration,
    poll: Duration,
    tx: mpsc::Sender<()>,
) -> Result<(), WatchError> {
    let (root, mode) = watch_root(&path);
    // notify calls back on its own thread; one-slot channels bridge it to tokio. Events
    // that surely change something wake the caller at once; metadata-only events (a
    // chmod, but also atime updates caused by our own reads) first compare the state.
    let (sure_tx, mut sure_rx) = mpsc::channel::<()>(1);
    let (maybe_tx, mut maybe_rx) = mpsc::channel::<()>(1);
    let handler = move |res: DebounceEventResult| {
        let change = match &res {
            Ok(events) => events.iter().map(|e| classify(&e.event.kind)).max(),
            Err(errors) => {
                for e in errors {
                    tracing::warn!(error = %e, "policy watch error; reloading to be safe");
                }
                Some(Change::Sure)
            }
        };
        // Full: a wake-up is already pending. Closed: the watcher is shutting down.
        match change {
            Some(Change::Sure) => drop(sure_tx.try_send(())),
            Some(Change::Maybe) => drop(maybe_tx.try_send(())),
            _ => {}
        }
    };
    let notify_err = |source| WatchError::Notify {
        path: root.clone(),
        source,
    };
    let debounce = debounce.max(Duration::from_millis(10));
    let mut debouncer = new_debouncer(debounce, None, handler).map_err(notify_err)?;
    debouncer.watch(&root, mode).map_err(notify_err)?;

    let mut last = state_of(&path, &root).await;
    if !wake(&tx) {
        return Ok(());
    }
    let mut ticker = tokio::time::interval(poll.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate

    loop {
        let sure = tokio::select! {
            _ = tx.closed() => return Ok(()),
            Some(()) = sure_rx.recv() => true,
            Some(()) = maybe_rx.recv() => false,
            _ = ticker.tick() => false,
        };
        let now = state_of(&path, &root).await;
        if sure || now != last {
            last = now;
            if !wake(&tx) {
                return Ok(());
            }
        }
    }
}

/// How much an event says about the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Change {
    /// Opens and closes after reading: inotify reports them, and counting them would
    /// make every reload (and every poll) wake us again.
    No,
    /// Metadata only: a chmod, or an atime update caused by reading.
    Maybe,
    /// Created, removed, renamed or written.
    Sure,
}

fn classify(kind: &EventKind) -> Change {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Change::Sure,
        EventKind::Access(_) => Change::No,
        EventKind::Modify(ModifyKind::Metadata(_)) => Change::Maybe,
        _ => Change::Sure,
    }
}

/// What to watch for `path`, and how.
fn watch_root(path: &Path) -> (PathBuf, RecursiveMode) {
    if path.is_dir() {
        return (path.to_path_buf(), RecursiveMode::Recursive);
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    (parent, RecursiveMode::NonRecursive)
}

/// Sends a wake-up unless one is pending; `false` once the receiver is gone.
fn wake(tx: &mpsc::Sender<()>) -> bool {
    !matches!(tx.try_send(()), Err(mpsc::error::TrySendError::Closed(())))
}

/// The content hash of the policy files, plus the permission bits of the watched
/// directory's top-level entries (a `chmod 600` on a key file there is a change).
async fn state_of(path: &Path, root: &Path) -> String {
    let (path, root) = (path.to_path_buf(), root.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let mut state = fingerprint(&path);
        let mut modes: Vec<(std::ffi::OsString, u32)> = std::fs::read_dir(&root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let meta = std::fs::metadata(e.path()).ok()?;
                Some((e.file_name(), meta.permissions().mode()))
            })
            .collect();
        modes.sort();
        for (name, mode) in modes {
            state.push_str(&format!(" {}:{mode:o}", name.to_string_lossy()));
        }
        state
    })
    .await
    .unwrap_or_default()
}

#[cfg(test)]
mod tests;
