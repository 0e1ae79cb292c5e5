//! The hash chain: the HMAC key, how a line is sealed and checked, and the saved head.
//!
//! # How a line is sealed
//!
//! The writer serializes the line *without* `hash` (so the object already ends with
//! `"prev":"<hex>"}`), computes `hash = hex(HMAC-SHA256(key, those exact bytes))`, and
//! splices `,"hash":"<hex>"` in before the final `}`. A sealed line therefore always ends
//! with the fixed-size suffix `,"hash":"<64 lowercase hex>"}`.
//!
//! The verifier works on the raw line text the same way, never on re-serialized JSON: it
//! cuts that exact suffix off, appends `}`, and recomputes the HMAC over those bytes. Any
//! change to any byte before the suffix (including key order or whitespace) breaks the hash;
//! without the key nobody can compute a new one.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::digest::generic_array::GenericArray;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::AuditError;

/// Conventional file name of the chain key inside the certs directory.
pub const CHAIN_KEY_FILE: &str = "audit.key";
/// File name of the saved chain head, rewritten in place beside the key after each batch.
pub const HEAD_STATE_FILE: &str = "audit.head";
/// `prev` of the very first line ever written: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The seal's prefix; the suffix of a sealed line is this, 64 hex digits and `"}`.
const HASH_PREFIX: &str = ",\"hash\":\"";
/// Length of `,"hash":"<64 hex>"}`.
const SUFFIX_LEN: usize = HASH_PREFIX.len() + 64 + 2;

type HmacSha256 = Hmac<Sha256>;

/// The HMAC key of the audit chain: 32 random bytes, stored as hex (or base64) on one line
/// in a file with mode 0600 beside the CA. Its `Debug` output never shows the key.
#[derive(Clone)]
pub struct ChainKey {
    mac: HmacSha256,
    head_file: Option<PathBuf>,
}

// === impl ChainKey ===

impl ChainKey {
    /// A key from raw bytes, with no head state file (tests and tools).
    pub fn from_bytes(bytes: [u8; 32]) -> ChainKey {
        ChainKey {
            mac: keyed(&bytes),
            head_file: None,
        }
    }

    /// Saves and reads the chain head at `path` (normally done by [`ChainKey::load`]).
    pub fn with_head_file(mut self, path: impl Into<PathBuf>) -> ChainKey {
        self.head_file = Some(path.into());
        self
    }

    /// Where the head state lives: `audit.head` beside the key file, if the key came from one.
    pub fn head_file(&self) -> Option<&Path> {
        self.head_file.as_deref()
    }

    /// Loads the key at `path`, or creates one (32 random bytes, hex, mode 0600, parent
    /// directories created) if the file does not exist. Creation is atomic: a concurrent
    /// creator's key wins and is loaded.
    pub fn load_or_create(path: &Path) -> Result<ChainKey, AuditError> {
        match fs::symlink_metadata(path) {
            Ok(_) => return ChainKey::load(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(AuditError::io(path, e)),
        }
        let dir = parent_dir(path);
        fs::create_dir_all(&dir).map_err(|e| AuditError::io(&dir, e))?;
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let tmp = dir.join(format!(
            ".{CHAIN_KEY_FILE}.{:016x}.tmp",
            rand::random::<u64>()
        ));
        let text = format!("{}\n", hex::encode(bytes));
        let written =
            write_private(&tmp, text.as_bytes(), true).and_then(|()| fs::hard_link(&tmp, path));
        let _ = fs::remove_file(&tmp);
        match written {
            Ok(()) => Ok(ChainKey::from_bytes(bytes).with_head_file(dir.join(HEAD_STATE_FILE))),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => ChainKey::load(path),
            Err(e) => Err(AuditError::io(path, e)),
        }
    }

    /// Loads the key at `path`: one line of 64 hex digits or base64 of 32 bytes. The head
    /// state file is `audit.head` in the same directory.
    pub fn load(path: &Path) -> Result<ChainKey, AuditError> {
        let text = fs::read_to_string(path).map_err(|e| AuditError::io(path, e))?;
        let invalid = |reason: &str| AuditError::InvalidKey {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let text = text.trim();
        let decoded = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).ok()
        } else {
            decode_base64(text)
        };
        let decoded = decoded.ok_or_else(|| invalid("not hex or base64 on one line"))?;
        let bytes: [u8; 32] = decoded
            .try_into()
            .map_err(|_| invalid("the key must be exactly 32 bytes"))?;
        if let Ok(meta) = fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "audit chain key is readable by group or others; chmod 600 it");
            }
        }
        Ok(ChainKey::from_bytes(bytes).with_head_file(parent_dir(path).join(HEAD_STATE_FILE)))
    }

    /// Seals the unsealed line `buf[start..]` (a JSON object ending in `}`) in place and
    /// returns its hash. See the module documentation for the exact bytes covered.
    pub(crate) fn seal(&self, buf: &mut Vec<u8>, start: usize) -> String {
        let mut mac = self.mac.clone();
        mac.update(&buf[start..]);
        let hash = hex::encode(mac.finalize().into_bytes());
        buf.pop();
        buf.extend_from_slice(HASH_PREFIX.as_bytes());
        buf.extend_from_slice(hash.as_bytes());
        buf.extend_from_slice(b"\"}");
        hash
    }

    /// True when `hash` is the HMAC of `unsealed_prefix` followed by `}`.
    pub(crate) fn check(&self, unsealed_prefix: &str, hash: &str) -> bool {
        let Ok(expected) = hex::decode(hash) else {
            return false;
        };
        let mut mac = self.mac.clone();
        mac.update(unsealed_prefix.as_bytes());
        mac.update(b"}");
        mac.verify_slice(&expected).is_ok()
    }
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainKey")
            .field("key", &"..")
            .field("head_file", &self.head_file)
            .finish()
    }
}

/// Splits a sealed line into the text before the seal (without its closing `}`) and the
/// hash, or `None` when the line does not end with the exact seal suffix.
pub(crate) fn split_sealed(line: &str) -> Option<(&str, &str)> {
    let cut = line.len().checked_sub(SUFFIX_LEN)?;
    let (prefix, suffix) = (line.get(..cut)?, line.get(cut..)?);
    let hash = suffix.strip_prefix(HASH_PREFIX)?.strip_suffix("\"}")?;
    let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    (hash.len() == 64 && hash.bytes().all(lower_hex)).then_some((prefix, hash))
}

/// Sequence number and hash of the last line written: where the chain continues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Head {
    /// The last line's `seq` (0 before the first line).
    pub seq: u64,
    /// The last line's `hash` (the genesis hash before the first line).
    pub hash: String,
}

// === impl Head ===

impl Head {
    /// The head before the first line ever.
    pub fn genesis() -> Head {
        Head {
            seq: 0,
            hash: GENESIS_HASH.to_string(),
        }
    }

    /// Reads a saved head; `Ok(None)` when the file does not exist.
    pub fn load(path: &Path) -> std::io::Result<Option<Head>> {
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Saves the head to `path` (see [`HeadFile`]).
    #[cfg(test)]
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        HeadFile::new(path).save(self)
    }
}

/// Width of the saved head record: the JSON, padded with spaces, then a newline. A head is
/// at most ~100 bytes, so every record has the same length and rewriting one in place
/// never leaves the tail of a longer one behind.
const HEAD_RECORD_LEN: usize = 128;

/// The saved head state, kept open and rewritten in place after each batch: one `pwrite`
/// of a fixed-width record instead of creating a temporary file and renaming it over, which
/// cost an unlink, a create and a rename per batch (docs/benchmarks.md, `log_allowed`).
///
/// A record is one write of 128 bytes at offset 0 inside one page, which a process crash
/// cannot tear; the file is not fsynced (the log itself is fsynced only at shutdown, and
/// after a crash the log's own last line is where the chain resumes).
pub(crate) struct HeadFile {
    path: PathBuf,
    file: Option<fs::File>,
}

// === impl HeadFile ===

impl HeadFile {
    /// The head state at `path`; nothing is opened until the first save.
    pub(crate) fn new(path: &Path) -> HeadFile {
        HeadFile {
            path: path.to_path_buf(),
            file: None,
        }
    }

    /// Where the head is saved.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `head` over the previous record (creating the file, mode 0600).
    pub(crate) fn save(&mut self, head: &Head) -> std::io::Result<()> {
        let mut record = serde_json::to_vec(head)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if record.len() < HEAD_RECORD_LEN - 1 {
            record.resize(HEAD_RECORD_LEN - 1, b' ');
        }
        record.push(b'\n');
        let written = match &self.file {
            Some(file) => file.write_all_at(&record, 0),
            None => self.open_with(&record),
        };
        if written.is_err() {
            // Open the path afresh on the next save rather than retry a failing handle.
            self.file = None;
        }
        written
    }

    /// Opens the file and writes the first record; a longer file (from an older version)
    /// is cut to that record only once it is in place, so it is never empty in between.
    fn open_with(&mut self, record: &[u8]) -> std::io::Result<()> {
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&self.path)?;
        file.write_all_at(record, 0)?;
        if file.metadata()?.len() > record.len() as u64 {
            file.set_len(record.len() as u64)?;
        }
        self.file = Some(file);
        Ok(())
    }
}

/// HMAC-SHA256 keyed with `bytes`. HMAC zero-pads a key shorter than the hash's 64-byte
/// block, so keying with the padded block is the same MAC and needs no fallible constructor.
fn keyed(bytes: &[u8; 32]) -> HmacSha256 {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(bytes);
    <HmacSha256 as KeyInit>::new(GenericArray::from_slice(&block))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates `path` (which must not exist) with mode 0600 and writes `bytes`, fsynced when
/// `durable`.
pub(crate) fn write_private(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    if durable {
        file.sync_all()?;
    }
    Ok(())
}

/// Standard or URL-safe base64, padded or not.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ChainKey {
        ChainKey::from_bytes([7u8; 32])
    }

    #[test]
    fn seal_then_check_round_trips() {
        let mut buf = br#"{"seq":1,"prev":"00"}"#.to_vec();
        let hash = key().seal(&mut buf, 0);
        let line = String::from_utf8(buf).expect("utf8");
        assert!(line.ends_with(&format!(",\"hash\":\"{hash}\"}}")));
        let (prefix, found) = split_sealed(&line).expect("sealed");
        assert_eq!(found, hash);
        assert!(key().check(prefix, found));
        assert!(!ChainKey::from_bytes([8u8; 32]).check(prefix, found));
        let edited = prefix.replace("\"seq\":1", "\"seq\":2");
        assert!(!key().check(&edited, found));
    }

    #[test]
    fn padded_key_is_plain_hmac_sha256() {
        let mut plain = <HmacSha256 as Mac>::new_from_slice(&[7u8; 32]).expect("any length");
        plain.update(b"{\"x\":1}");
        let mut buf = b"{\"x\":1}".to_vec();
        let hash = key().seal(&mut buf, 0);
        assert_eq!(hash, hex::encode(plain.finalize().into_bytes()));
    }

    #[test]
    fn split_rejects_non_canonical_suffix() {
        assert!(split_sealed(r#"{"hash":"ab"}"#).is_none());
        let upper = format!("{{\"a\":1,\"hash\":\"{}\"}}", "A".repeat(64));
        assert!(split_sealed(&upper).is_none());
        let spaced = format!("{{\"a\":1, \"hash\":\"{}\"}}", "a".repeat(64));
        assert!(split_sealed(&spaced).is_none());
    }

    #[test]
    fn creates_private_key_and_loads_it_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("certs").join(CHAIN_KEY_FILE);
        let created = ChainKey::load_or_create(&path).expect("create");
        let mode = fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = ChainKey::load_or_create(&path).expect("load");
        let mut a = br#"{"x":1}"#.to_vec();
        let mut b = a.clone();
        assert_eq!(created.seal(&mut a, 0), loaded.seal(&mut b, 0));
        assert_eq!(
            loaded.head_file(),
            Some(dir.path().join("certs").join(HEAD_STATE_FILE).as_path())
        );
        assert!(!format!("{loaded:?}").contains(&fs::read_to_string(&path).expect("read")));
    }

    #[test]
    fn loads_base64_and_refuses_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k");
        // 32 bytes of 0xff in base64.
        fs::write(&path, "//////////////////////////////////////////8=\n").expect("write");
        let b64 = ChainKey::load(&path).expect("base64 key");
        let mut a = br#"{"x":1}"#.to_vec();
        let mut b = a.clone();
        let hex_key = ChainKey::from_bytes([0xff; 32]);
        assert_eq!(b64.seal(&mut a, 0), hex_key.seal(&mut b, 0));
        fs::write(&path, "not a key").expect("write");
        assert!(matches!(
            ChainKey::load(&path),
            Err(AuditError::InvalidKey { .. })
        ));
        fs::write(&path, "AAAA").expect("write");
        assert!(matches!(
            ChainKey::load(&path),
            Err(AuditError::InvalidKey { .. })
        ));
    }

    #[test]
    fn head_saves_and_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(HEAD_STATE_FILE);
        assert_eq!(Head::load(&path).expect("load"), None);
        let head = Head {
            seq: 42,
            hash: "ab".repeat(32),
        };
        head.save(&path).expect("save");
        head.save(&path).expect("save again");
        assert_eq!(Head::load(&path).expect("load"), Some(head));
    }

    #[test]
    fn the_head_file_is_rewritten_in_place_and_cut_to_one_record() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(HEAD_STATE_FILE);
        // What an older version left: a longer file, written by temp file + rename.
        let old = Head {
            seq: 7,
            hash: "cd".repeat(32),
        };
        let mut long = serde_json::to_vec(&old).expect("json");
        long.resize(300, b' ');
        fs::write(&path, &long).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        let mut file = HeadFile::new(&path);
        let mut last = None;
        for seq in [u64::MAX, 1, 123_456] {
            let head = Head {
                seq,
                hash: format!("{:064x}", seq),
            };
            file.save(&head).expect("save");
            assert_eq!(Head::load(&path).expect("load"), Some(head));
            let meta = fs::metadata(&path).expect("meta");
            assert_eq!(meta.len(), HEAD_RECORD_LEN as u64, "one fixed-width record");
            assert_eq!(meta.mode() & 0o777, 0o600);
            if let Some(ino) = last {
                assert_eq!(meta.ino(), ino, "rewritten in place, not replaced");
            }
            last = Some(meta.ino());
        }
        // Removed under the writer: writes go to the unlinked file until a save fails;
        // a new writer (the next start) creates it again, mode 0600.
        fs::remove_file(&path).expect("remove");
        let head = Head::genesis();
        HeadFile::new(&path).save(&head).expect("recreated");
        assert_eq!(Head::load(&path).expect("load"), Some(head));
        assert_eq!(fs::metadata(&path).expect("meta").mode() & 0o777, 0o600);
    }
}
