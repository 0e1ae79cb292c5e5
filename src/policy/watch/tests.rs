//! Real file systems in temporary directories; every wait is bounded.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::timeout;

use super::watch;
use crate::policy::load::load;

const LIMIT: Duration = Duration::from_secs(10);

fn policy(name: &str) -> String {
    format!("[[allow]]\nname = \"{name}\"\nbase_url = \"https://api.openai.com/v1\"\n")
}

fn allow_name(dir: &Path) -> String {
    load(dir)
        .map(|p| p.model.allow[0].name.clone())
        .unwrap_or_else(|e| e.to_string())
}

/// Starts a watcher and waits until it is armed (its first wake-up).
async fn start(path: &Path, debounce: Duration, poll: Duration) -> mpsc::Receiver<()> {
    let (tx, mut rx) = mpsc::channel(1);
    tokio::spawn(watch(path.to_path_buf(), debounce, poll, tx));
    let armed = timeout(LIMIT, rx.recv()).await;
    assert_eq!(armed.ok().flatten(), Some(()), "watcher did not arm");
    rx
}

/// Waits for wake-ups until `dir` loads with allow name `want`.
async fn until_loaded(rx: &mut mpsc::Receiver<()>, dir: &Path, want: &str) {
    let got = timeout(LIMIT, async {
        loop {
            rx.recv().await;
            if allow_name(dir) == want {
                return;
            }
        }
    })
    .await;
    assert!(
        got.is_ok(),
        "no wake-up with {want} loaded; now: {}",
        allow_name(dir)
    );
}

/// Drains wake-ups caused by setup, until none came for a short while (bounded).
async fn quiet(rx: &mut mpsc::Receiver<()>) {
    for _ in 0..50 {
        if timeout(Duration::from_millis(400), rx.recv())
            .await
            .is_err()
        {
            return;
        }
    }
}

#[tokio::test]
async fn plain_write_triggers() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    fs::write(dir.path().join("00.toml"), policy("one")).unwrap_or_else(|e| panic!("{e}"));
    let mut rx = start(
        dir.path(),
        Duration::from_millis(50),
        Duration::from_secs(3600),
    )
    .await;
    fs::write(dir.path().join("00.toml"), policy("two")).unwrap_or_else(|e| panic!("{e}"));
    until_loaded(&mut rx, dir.path(), "two").await;
}

#[tokio::test]
async fn editor_rename_triggers() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("00.toml");
    fs::write(&file, policy("one")).unwrap_or_else(|e| panic!("{e}"));
    let mut rx = start(
        dir.path(),
        Duration::from_millis(50),
        Duration::from_secs(3600),
    )
    .await;
    let tmp = dir.path().join(".00.toml.swp");
    fs::write(&tmp, policy("two")).unwrap_or_else(|e| panic!("{e}"));
    fs::rename(&tmp, &file).unwrap_or_else(|e| panic!("{e}"));
    until_loaded(&mut rx, dir.path(), "two").await;
}

#[tokio::test]
async fn single_file_watches_its_directory() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("policy.toml");
    fs::write(&file, policy("one")).unwrap_or_else(|e| panic!("{e}"));
    let mut rx = start(&file, Duration::from_millis(50), Duration::from_secs(3600)).await;
    let tmp = dir.path().join("policy.toml.tmp");
    fs::write(&tmp, policy("two")).unwrap_or_else(|e| panic!("{e}"));
    fs::rename(&tmp, &file).unwrap_or_else(|e| panic!("{e}"));
    until_loaded(&mut rx, &file, "two").await;
}

#[tokio::test]
async fn configmap_symlink_swap_triggers() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let ok = |r: std::io::Result<()>| r.unwrap_or_else(|e| panic!("{e}"));
    ok(fs::create_dir(d.join("..2026_11_24_a")));
    ok(fs::write(d.join("..2026_11_24_a/00.toml"), policy("one")));
    ok(symlink("..2026_11_24_a", d.join("..data")));
    ok(symlink("..data/00.toml", d.join("00.toml")));
    assert_eq!(allow_name(d), "one");
    let mut rx = start(d, Duration::from_millis(100), Duration::from_secs(3600)).await;

    ok(fs::create_dir(d.join("..2026_11_24_b")));
    ok(fs::write(d.join("..2026_11_24_b/00.toml"), policy("two")));
    ok(symlink("..2026_11_24_b", d.join("..data_tmp")));
    quiet(&mut rx).await;
    assert_eq!(allow_name(d), "one", "nothing visible changed yet");

    ok(fs::rename(d.join("..data_tmp"), d.join("..data")));
    until_loaded(&mut rx, d, "two").await;
}

#[tokio::test]
async fn poll_catches_what_events_miss() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    fs::write(dir.path().join("00.toml"), policy("one")).unwrap_or_else(|e| panic!("{e}"));
    // A debounce far longer than the test: only the poll can report the change in time.
    let mut rx = start(
        dir.path(),
        Duration::from_secs(3600),
        Duration::from_millis(50),
    )
    .await;
    fs::write(dir.path().join("00.toml"), policy("two")).unwrap_or_else(|e| panic!("{e}"));
    until_loaded(&mut rx, dir.path(), "two").await;
}

#[tokio::test]
async fn reading_the_policy_does_not_trigger() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    fs::write(dir.path().join("00.toml"), policy("one")).unwrap_or_else(|e| panic!("{e}"));
    // Read once before watching: the first read after a write may update atime (ATTRIB).
    assert_eq!(allow_name(dir.path()), "one");
    let mut rx = start(
        dir.path(),
        Duration::from_millis(50),
        Duration::from_millis(100),
    )
    .await;
    for _ in 0..5 {
        assert_eq!(allow_name(dir.path()), "one");
    }
    // Reloads and polls read the files; none of that may look like a change.
    let woke = timeout(Duration::from_millis(1500), rx.recv()).await;
    assert!(woke.is_err(), "woken without a change");
}

#[tokio::test]
async fn chmod_in_the_directory_triggers() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    fs::write(dir.path().join("00.toml"), policy("one")).unwrap_or_else(|e| panic!("{e}"));
    let key = dir.path().join("protect.key");
    fs::write(&key, "x").unwrap_or_else(|e| panic!("{e}"));
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap_or_else(|e| panic!("{e}"));
    let mut rx = start(
        dir.path(),
        Duration::from_millis(50),
        Duration::from_secs(3600),
    )
    .await;
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(timeout(LIMIT, rx.recv()).await.ok().flatten(), Some(()));
}

#[tokio::test]
async fn returns_when_receiver_is_dropped() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    fs::write(dir.path().join("00.toml"), policy("one")).unwrap_or_else(|e| panic!("{e}"));
    let (tx, mut rx) = mpsc::channel(1);
    let task = tokio::spawn(watch(
        dir.path().to_path_buf(),
        Duration::from_millis(50),
        Duration::from_secs(3600),
        tx,
    ));
    assert_eq!(timeout(LIMIT, rx.recv()).await.ok().flatten(), Some(()));
    drop(rx);
    let done = timeout(LIMIT, task).await;
    assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");
}

#[tokio::test]
async fn missing_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (tx, _rx) = mpsc::channel(1);
    let gone = dir.path().join("nope/policy.toml");
    let res = timeout(
        LIMIT,
        watch(gone, Duration::from_millis(50), Duration::from_secs(1), tx),
    )
    .await;
    assert!(matches!(res, Ok(Err(_))), "{res:?}");
}
