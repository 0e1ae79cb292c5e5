//! Where lines go: the append-only file, where its chain resumes, and rotation.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::chain::{split_sealed, ChainKey, Head};
use super::AuditError;

/// A tail line longer than this is not searched for: resume falls back to a full scan.
const MAX_TAIL: u64 = 1 << 20;

/// Destination of sealed lines. The writer calls it from its own blocking thread.
pub(crate) trait Sink: Send + 'static {
    /// Appends `bytes` (whole lines) with one write. On error, as little as possible of it
    /// may remain: later lines must still start on a line of their own.
    fn write_batch(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Forces what was written to stable storage.
    fn sync(&mut self) -> io::Result<()>;
}

/// The JSONL file, opened in append mode. The batch buffer assembled by the writer is the
/// write buffer: each batch is one `write_all`, so no separate `BufWriter` layer is needed.
pub(crate) struct FileSink {
    path: PathBuf,
    file: File,
    /// (device, inode) of the open file, to notice rotation (the path renamed away).
    id: (u64, u64),
    /// The file ends in a partial line: the next write starts with a newline.
    broken_tail: bool,
    /// Reopening after rotation failed and was logged; stay quiet until it works.
    reopen_failing: bool,
}

// === impl FileSink ===

impl FileSink {
    /// Opens (creating directories and the file, mode 0640) `path` for appending and finds
    /// where the chain continues: the file's last sealed line, else the head state saved
    /// beside the key (a new file after rotation), else the genesis.
    pub(crate) fn open(path: &Path, key: &ChainKey) -> Result<(FileSink, Head), AuditError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| AuditError::io(dir, e))?;
        }
        let file = open_append(path).map_err(|e| AuditError::io(path, e))?;
        let meta = file.metadata().map_err(|e| AuditError::io(path, e))?;
        let mut reader = File::open(path).map_err(|e| AuditError::io(path, e))?;
        let (head, broken_tail) = resume(&mut reader, key).map_err(|e| AuditError::io(path, e))?;
        let head = match head {
            Some(head) => head,
            None => saved_head(key),
        };
        let sink = FileSink {
            path: path.to_path_buf(),
            file,
            id: (meta.dev(), meta.ino()),
            broken_tail,
            reopen_failing: false,
        };
        Ok((sink, head))
    }

    /// If the path no longer names the open file (renamed away by rotation, or deleted),
    /// opens a new file there; the chain simply continues into it.
    fn reopen_if_moved(&mut self) {
        match fs::metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.id => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(_) => return,
        }
        let reopened = open_append(&self.path).and_then(|file| {
            let meta = file.metadata()?;
            Ok((file, meta))
        });
        match reopened {
            Ok((file, meta)) => {
                tracing::info!(path = %self.path.display(), "audit log rotated; continuing the chain in a new file");
                self.broken_tail = !ends_with_newline(&file, meta.len());
                self.file = file;
                self.id = (meta.dev(), meta.ino());
                self.reopen_failing = false;
            }
            Err(_) if self.reopen_failing => {}
            Err(e) => {
                self.reopen_failing = true;
                tracing::warn!(path = %self.path.display(), error = %e, "cannot reopen the rotated audit log");
            }
        }
    }
}

impl Sink for FileSink {
    fn write_batch(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.reopen_if_moved();
        let start_len = self.file.metadata()?.len();
        let result = if self.broken_tail {
            let mut fixed = Vec::with_capacity(bytes.len() + 1);
            fixed.push(b'\n');
            fixed.extend_from_slice(bytes);
            self.file.write_all(&fixed)
        } else {
            self.file.write_all(bytes)
        };
        match result {
            Ok(()) => {
                self.broken_tail = false;
                Ok(())
            }
            Err(e) => {
                // Cut off whatever part of the batch made it, so no half line stays behind.
                if self.file.set_len(start_len).is_err() {
                    self.broken_tail = true;
                }
                Err(e)
            }
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

fn ends_with_newline(file: &File, len: u64) -> bool {
    if len == 0 {
        return true;
    }
    let mut last = [0u8; 1];
    let mut reader = file;
    reader.seek(SeekFrom::Start(len - 1)).is_ok()
        && reader.read_exact(&mut last).is_ok()
        && last[0] == b'\n'
}

/// The head saved beside the key, or the genesis.
fn saved_head(key: &ChainKey) -> Head {
    let Some(path) = key.head_file() else {
        return Head::genesis();
    };
    match Head::load(path) {
        Ok(Some(head)) => head,
        Ok(None) => Head::genesis(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "unreadable audit head state; starting a new chain");
            Head::genesis()
        }
    }
}

/// Where the file's chain ends: `(Some(head), _)` from its last sealed line, `(None, _)` for
/// an empty file or one without any sealed line; the flag says the file ends mid-line.
pub(crate) fn resume(file: &mut File, key: &ChainKey) -> io::Result<(Option<Head>, bool)> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok((None, false));
    }
    let broken_tail = !ends_with_newline(file, len);
    if let Some(line) = last_line(file, len)? {
        if let Some(head) = head_of(&line, key) {
            return Ok((Some(head), broken_tail));
        }
    }
    // The last line is partial or foreign (a crash mid-write): use the last good one.
    tracing::warn!("audit log does not end with a sealed line; resuming from the last one that is");
    file.seek(SeekFrom::Start(0))?;
    let mut found = None;
    for line in BufReader::new(&*file).split(b'\n') {
        if let Some(head) = head_of(&line?, key) {
            found = Some(head);
        }
    }
    Ok((found, broken_tail))
}

/// The last line of the file (without its newline), if it is shorter than [`MAX_TAIL`].
fn last_line(file: &mut File, len: u64) -> io::Result<Option<Vec<u8>>> {
    let mut tail: Vec<u8> = Vec::new();
    let mut pos = len;
    loop {
        let step = pos.min(8192);
        pos -= step;
        let mut chunk = vec![0u8; step as usize];
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
        let body = tail.strip_suffix(b"\n").unwrap_or(&tail);
        if let Some(i) = body.iter().rposition(|b| *b == b'\n') {
            return Ok(Some(body[i + 1..].to_vec()));
        }
        if pos == 0 {
            return Ok(Some(body.to_vec()));
        }
        if tail.len() as u64 > MAX_TAIL {
            return Ok(None);
        }
    }
}

/// The chain head a sealed line establishes, or `None` if it is not a sealed line. A line
/// that does not verify under `key` is still followed (verification will name it).
fn head_of(line: &[u8], key: &ChainKey) -> Option<Head> {
    let text = std::str::from_utf8(line).ok()?;
    let (prefix, hash) = split_sealed(text)?;
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let seq = value.get("seq")?.as_u64()?;
    if !key.check(prefix, hash) {
        tracing::warn!(
            seq,
            "the audit log's last line does not verify under the chain key (was the key replaced?)"
        );
    }
    Some(Head {
        seq,
        hash: hash.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(key: &ChainKey, seq: u64, filler: &str) -> String {
        let mut buf = format!("{{\"seq\":{seq},\"prev\":\"{filler}\"}}").into_bytes();
        key.seal(&mut buf, 0);
        String::from_utf8(buf).expect("utf8")
    }

    #[test]
    fn resumes_from_last_line_even_after_a_partial_write() {
        let key = ChainKey::from_bytes([1; 32]);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.jsonl");
        let long = "y".repeat(20_000);
        let text = format!("{}\n{}\n", sealed(&key, 1, &long), sealed(&key, 2, &long));
        fs::write(&path, &text).expect("write");
        let mut file = File::open(&path).expect("open");
        let (head, broken) = resume(&mut file, &key).expect("resume");
        assert_eq!(head.map(|h| h.seq), Some(2));
        assert!(!broken);

        fs::write(&path, format!("{text}{{\"seq\":3,\"pr")).expect("write");
        let mut file = File::open(&path).expect("open");
        let (head, broken) = resume(&mut file, &key).expect("resume");
        assert_eq!(head.map(|h| h.seq), Some(2));
        assert!(broken);
    }

    #[test]
    fn open_creates_dirs_and_follows_rotation() {
        let key = ChainKey::from_bytes([1; 32]);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("logs").join("a.jsonl");
        let (mut sink, head) = FileSink::open(&path, &key).expect("open");
        assert_eq!(head, Head::genesis());
        sink.write_batch(b"one\n").expect("write");
        fs::rename(&path, dir.path().join("old.jsonl")).expect("rename");
        sink.write_batch(b"two\n").expect("write");
        assert_eq!(fs::read_to_string(&path).expect("read"), "two\n");
        assert_eq!(
            fs::read_to_string(dir.path().join("old.jsonl")).expect("read"),
            "one\n"
        );
    }
}
