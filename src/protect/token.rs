//! Tokens: the deterministic, authenticated replacement of one span.
//!
//! ```text
//! token    = "PII." key-id "." detector "." sealed
//! key-id   = [a-z0-9]{1,16}
//! detector = [a-z][a-z0-9_]{0,31}
//! sealed   = base64url, no padding, of SIV tag (16 bytes) || ciphertext (1..=64 bytes):
//!            23..=107 characters of [A-Za-z0-9_-], never a length of 1 mod 4
//! ```
//!
//! The longest token is 4 + 16 + 1 + 32 + 1 + 107 = [`MAX_TOKEN_LEN`] = 161 bytes. Sealing is
//! AES-SIV (RFC 5297, AES-CMAC-SIV with a 512-bit key, i.e. AES-256 strength) with no
//! nonce, so equal spans give equal tokens under one key, and the associated data vector
//! is `[key-id, detector]`: a token's visible key id and detector are authenticated too.
//! The 512-bit SIV key is HKDF-SHA256(ikm = master key, salt = none,
//! info = "llm-egress protect v1" || 0x00 || key-id).
//!
//! Recognition: `.` and every other character outside the base64url alphabet ends a
//! token, so `PII.k1.email.AbC…,` or `…AbC.` at the end of a sentence parse as expected.
//! A model may glue letters, `-` or `_` to a token (`…AbCs`): the greedy run is tried
//! first, then each shorter prefix down to 23 characters; authentication makes a false
//! match negligible (2^-128 per try).

use aes_siv::siv::Aes256Siv;
use aes_siv::KeyInit;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hkdf::Hkdf;
use sha2::Sha256;

use super::error::ProtectError;
use super::keys::wipe;

/// Literal start of every token.
pub const TOKEN_PREFIX: &str = "PII.";
/// Longest possible token in bytes (the streaming hold-back bound).
pub const MAX_TOKEN_LEN: usize =
    TOKEN_PREFIX.len() + MAX_KEY_ID + 1 + MAX_DETECTOR_NAME + 1 + MAX_SEALED;
/// Longest span, in bytes, that is tokenized; longer spans are redacted.
pub const MAX_SPAN: usize = 64;
/// Longest key id.
pub(crate) const MAX_KEY_ID: usize = 16;
/// Longest detector (pattern) name.
pub(crate) const MAX_DETECTOR_NAME: usize = 32;
/// Sealed length in characters for a 1-byte span (16 + 1 bytes).
const MIN_SEALED: usize = 23;
/// Sealed length in characters for a 64-byte span (16 + 64 bytes).
const MAX_SEALED: usize = 107;
/// HKDF info label; the key id follows a 0x00 separator.
const HKDF_LABEL: &[u8] = b"llm-egress protect v1";

/// The configured keys, each as its derived SIV key. The first one seals.
pub(crate) struct KeyRing {
    keys: Vec<SivKey>,
}

struct SivKey {
    id: String,
    key: [u8; 64],
}

/// What [`KeyRing::examine`] found at a `P`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// An authentic token ending at `end` (absolute offset); its plaintext.
    Token { end: usize, plain: String },
    /// Token-shaped but unknown key or failed authentication: left as is, counted.
    Failed,
    /// Not a token.
    NotToken,
    /// The text ends inside something that may still become a token.
    NeedMore,
}

/// Is `id` a valid key id (`[a-z0-9]{1,16}`)?
pub(crate) fn valid_key_id(id: &str) -> bool {
    (1..=MAX_KEY_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Is `name` a valid detector name (`[a-z][a-z0-9_]{0,31}`)?
pub(crate) fn valid_detector_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_DETECTOR_NAME
        && b[0].is_ascii_lowercase()
        && b.iter().all(|&c| det_byte(c))
}

fn key_byte(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn det_byte(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'
}

fn sealed_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

// === impl KeyRing ===

impl KeyRing {
    /// Derives the SIV key of each master key. Ids must be valid and unique.
    pub(crate) fn new(keys: &[(String, [u8; 32])]) -> Result<KeyRing, ProtectError> {
        if keys.is_empty() {
            return Err(ProtectError::NoKeys);
        }
        let mut ring = KeyRing {
            keys: Vec::with_capacity(keys.len()),
        };
        for (id, master) in keys {
            if !valid_key_id(id) {
                return Err(ProtectError::InvalidKeyId { id: id.clone() });
            }
            if ring.get(id.as_bytes()).is_some() {
                return Err(ProtectError::DuplicateKeyId { id: id.clone() });
            }
            let mut info = Vec::with_capacity(HKDF_LABEL.len() + 1 + id.len());
            info.extend_from_slice(HKDF_LABEL);
            info.push(0);
            info.extend_from_slice(id.as_bytes());
            let mut key = [0u8; 64];
            Hkdf::<Sha256>::new(None, master)
                .expand(&info, &mut key)
                .map_err(|_| ProtectError::Encrypt)?;
            ring.keys.push(SivKey {
                id: id.clone(),
                key,
            });
        }
        Ok(ring)
    }

    /// The key ids, sealing key first.
    pub(crate) fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    fn get(&self, id: &[u8]) -> Option<&SivKey> {
        self.keys.iter().find(|k| k.id.as_bytes() == id)
    }

    /// Seals `span` (at most [`MAX_SPAN`] bytes) found by `detector` into a token, appended
    /// to `out`.
    pub(crate) fn seal(
        &self,
        detector: &str,
        span: &str,
        out: &mut String,
    ) -> Result<(), ProtectError> {
        let key = self.keys.first().ok_or(ProtectError::NoKeys)?;
        let mut siv = Aes256Siv::new_from_slice(&key.key).map_err(|_| ProtectError::Encrypt)?;
        let sealed = siv
            .encrypt([key.id.as_bytes(), detector.as_bytes()], span.as_bytes())
            .map_err(|_| ProtectError::Encrypt)?;
        out.push_str(TOKEN_PREFIX);
        out.push_str(&key.id);
        out.push('.');
        out.push_str(detector);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&sealed, out);
        Ok(())
    }

    /// Looks at `text[at..]`, which starts with `P`. `complete` says the text ends where
    /// it ends (no more input will come); otherwise a token cut by the end of `text` is
    /// [`Found::NeedMore`]. The decision depends only on the token's own bytes and the
    /// one byte after it, so it is the same whatever way the text was split.
    pub(crate) fn examine(&self, text: &str, at: usize, complete: bool) -> Found {
        let b = &text.as_bytes()[at..];
        let more = if complete {
            Found::NotToken
        } else {
            Found::NeedMore
        };
        for (k, want) in TOKEN_PREFIX.bytes().enumerate() {
            match b.get(k) {
                None => return more,
                Some(&c) if c == want => {}
                Some(_) => return Found::NotToken,
            }
        }
        let mut pos = TOKEN_PREFIX.len();
        let key_id = match segment(b, &mut pos, MAX_KEY_ID, key_byte, complete) {
            Ok(r) => r,
            Err(f) => return f,
        };
        let det = match segment(b, &mut pos, MAX_DETECTOR_NAME, det_byte, complete) {
            Ok(r) => r,
            Err(f) => return f,
        };
        if !b[det.start].is_ascii_lowercase() {
            return Found::NotToken;
        }
        let start = pos;
        while pos < b.len() && pos - start < MAX_SEALED && sealed_byte(b[pos]) {
            pos += 1;
        }
        let run = pos - start;
        if pos == b.len() && run < MAX_SEALED && !complete {
            return Found::NeedMore;
        }
        if run < MIN_SEALED {
            return Found::NotToken;
        }
        let Some(key) = self.get(&b[key_id]) else {
            return Found::Failed;
        };
        let Ok(mut siv) = Aes256Siv::new_from_slice(&key.key) else {
            return Found::Failed;
        };
        let headers = [key.id.as_bytes(), &b[det]];
        let mut buf = Vec::with_capacity(80);
        for len in (MIN_SEALED..=run).rev().filter(|l| l % 4 != 1) {
            buf.clear();
            if URL_SAFE_NO_PAD
                .decode_vec(&b[start..start + len], &mut buf)
                .is_err()
            {
                continue;
            }
            if let Ok(plain) = siv.decrypt(headers, &buf) {
                if let Ok(plain) = String::from_utf8(plain) {
                    return Found::Token {
                        end: at + start + len,
                        plain,
                    };
                }
            }
        }
        Found::Failed
    }
}

/// Reads a `.`-terminated segment of 1..=`max` bytes of class `ok` at `*pos`.
fn segment(
    b: &[u8],
    pos: &mut usize,
    max: usize,
    ok: fn(u8) -> bool,
    complete: bool,
) -> Result<std::ops::Range<usize>, Found> {
    let start = *pos;
    loop {
        match b.get(*pos) {
            None if complete => return Err(Found::NotToken),
            None => return Err(Found::NeedMore),
            Some(b'.') if *pos > start => break,
            Some(&c) if ok(c) && *pos - start < max => *pos += 1,
            Some(_) => return Err(Found::NotToken),
        }
    }
    let range = start..*pos;
    *pos += 1;
    Ok(range)
}

// === impl SivKey ===

impl Drop for SivKey {
    fn drop(&mut self) {
        wipe(&mut self.key);
    }
}
