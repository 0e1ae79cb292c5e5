//! Master keys: 32 random bytes, base64 (standard alphabet, padded) on one line, in a file
//! private to the proxy's user or in an environment variable. Key bytes never reach a
//! message: decoding errors are reported as a coarse [`KeyFormat`].

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::rngs::OsRng;
use rand::TryRngCore;

use super::error::{KeyFormat, ProtectError};

/// A key file larger than this is not a key file (a line of 44 characters is).
const MAX_KEY_FILE: u64 = 4096;

/// Reads a key file: base64 of 32 bytes on one line. Refuses a file that group or others
/// can access at all (`mode & 0o077 != 0`) with a message naming `chmod 600 PATH`; the
/// mode is checked on the opened file, so a swap between check and read cannot slip by.
pub fn load_key_file(path: &Path) -> Result<[u8; 32], ProtectError> {
    let read_err = |source| ProtectError::KeyFileRead {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(read_err(std::io::Error::new(
            ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(ProtectError::KeyFilePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    let mut buf = Vec::with_capacity(64);
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(read_err)?;
    let result = if buf.len() as u64 > MAX_KEY_FILE {
        Err(KeyFormat::MultipleLines)
    } else {
        std::str::from_utf8(&buf)
            .map_err(|_| KeyFormat::NotBase64)
            .and_then(decode_key)
    };
    wipe(&mut buf);
    result.map_err(|reason| ProtectError::KeyFileFormat {
        path: path.to_owned(),
        reason,
    })
}

/// Reads a key from an environment variable holding the same one-line base64 string as a
/// key file.
pub fn key_from_env(var: &str) -> Result<[u8; 32], ProtectError> {
    let value = std::env::var(var).map_err(|_| ProtectError::KeyEnvMissing { var: var.into() })?;
    decode_key(&value).map_err(|reason| ProtectError::KeyEnvFormat {
        var: var.into(),
        reason,
    })
}

/// Writes a new random key file with mode 0600. Refuses to overwrite an existing file
/// (`create_new`), so a typo cannot destroy the key that old tokens need.
pub fn keygen(path: &Path) -> Result<(), ProtectError> {
    let mut key = [0u8; 32];
    OsRng
        .try_fill_bytes(&mut key)
        .map_err(|_| ProtectError::Random)?;
    let mut line = STANDARD.encode(key).into_bytes();
    line.push(b'\n');
    wipe(&mut key);
    let written = write_new(path, &line);
    wipe(&mut line);
    written
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), ProtectError> {
    let write_err = |source| ProtectError::KeyFileWrite {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            ErrorKind::AlreadyExists => ProtectError::KeyFileExists {
                path: path.to_owned(),
            },
            _ => write_err(e),
        })?;
    file.write_all(bytes).map_err(write_err)?;
    file.sync_all().map_err(write_err)
}

/// Decodes one line of standard base64 into a 32-byte key.
pub(crate) fn decode_key(text: &str) -> Result<[u8; 32], KeyFormat> {
    let line = text.trim();
    if line.is_empty() {
        return Err(KeyFormat::Empty);
    }
    if line.contains(['\n', '\r']) {
        return Err(KeyFormat::MultipleLines);
    }
    let mut bytes = STANDARD.decode(line).map_err(|_| KeyFormat::NotBase64)?;
    let key =
        <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| KeyFormat::WrongLength(bytes.len()));
    wipe(&mut bytes);
    key
}

/// Best-effort overwrite of a buffer that held key material.
pub(crate) fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_mode(dir: &Path, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn keygen_writes_0600_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("protect.key");
        keygen(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let first = load_key_file(&p).unwrap();
        let err = keygen(&p).unwrap_err();
        assert!(matches!(err, ProtectError::KeyFileExists { .. }), "{err}");
        assert_eq!(load_key_file(&p).unwrap(), first, "file untouched");
        let q = dir.path().join("other.key");
        keygen(&q).unwrap();
        assert_ne!(load_key_file(&q).unwrap(), first);
    }

    #[test]
    fn load_refuses_group_or_other_access() {
        let dir = tempfile::tempdir().unwrap();
        let line = STANDARD.encode([7u8; 32]);
        for mode in [0o644, 0o640, 0o604, 0o620, 0o601] {
            let p = write_mode(dir.path(), "loose.key", &line, mode);
            let msg = load_key_file(&p).unwrap_err().to_string();
            assert!(msg.contains(&format!("chmod 600 {}", p.display())), "{msg}");
            assert!(!msg.contains(&line), "{msg}");
        }
        let p = write_mode(dir.path(), "tight.key", &format!("{line}\n"), 0o400);
        assert_eq!(load_key_file(&p).unwrap(), [7u8; 32]);
    }

    #[test]
    fn format_errors_are_clear_and_leak_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let short = STANDARD.encode([9u8; 16]);
        let secretish = "c2VjcmV0LWtleS1tYXRlcmlhbA$$";
        let cases = [
            ("", "empty"),
            (short.as_str(), "decodes to 16 bytes, not 32"),
            (secretish, "not valid base64"),
            ("QUJD\nREVG\n", "more than one line"),
        ];
        for (text, want) in cases {
            let p = write_mode(dir.path(), "bad.key", text, 0o600);
            let msg = load_key_file(&p).unwrap_err().to_string();
            assert!(msg.contains(want), "{msg}");
            assert!(msg.contains("bad.key"), "{msg}");
            for needle in [short.as_str(), "c2VjcmV0", "$$", "QUJD"] {
                assert!(!msg.contains(needle), "{msg}");
            }
        }
    }

    #[test]
    fn env_form_is_the_same_string() {
        // No set_var in tests: an unset variable and the decoder cover the env path.
        let msg = key_from_env("LLM_EGRESS_TEST_SURELY_UNSET_VAR_1234")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("LLM_EGRESS_TEST_SURELY_UNSET_VAR_1234 is not set"),
            "{msg}"
        );
        let line = STANDARD.encode([3u8; 32]);
        assert_eq!(decode_key(&format!("  {line}\r\n")), Ok([3u8; 32]));
        assert_eq!(decode_key("AAAA"), Err(KeyFormat::WrongLength(3)));
    }
}
