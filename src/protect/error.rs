//! The one error type of prompt protection. Every message names configuration (a key id,
//! a detector, a path, an environment variable) and never a plaintext span, a token's
//! content or any byte of key material: these messages reach logs and audit lines.

use std::path::PathBuf;

/// Why a key could not be read from its base64 text. Deliberately coarse: the decoder's
/// own errors name the offending symbol and offset, which would leak part of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// Nothing but whitespace.
    Empty,
    /// More than one non-empty line.
    MultipleLines,
    /// Not standard base64 (with padding).
    NotBase64,
    /// Valid base64 of the wrong number of bytes.
    WrongLength(usize),
}

/// Errors of building a [`super::Protector`], of key files and of protecting a request.
#[derive(Debug, thiserror::Error)]
pub enum ProtectError {
    /// No key configured.
    #[error("prompt protection needs at least one key")]
    NoKeys,
    /// A key id outside `[a-z0-9]{1,16}` (ids appear inside tokens).
    #[error("key id {id:?} does not match [a-z0-9]{{1,16}}")]
    InvalidKeyId {
        /// The offending id (an id is a name, not key material).
        id: String,
    },
    /// Two keys share an id.
    #[error("duplicate key id \"{id}\"")]
    DuplicateKeyId {
        /// The id given twice.
        id: String,
    },
    /// A detector name that is not built in.
    #[error("unknown detector \"{name}\" (built-in: email, phone, credit_card, iban, secret; custom ones go in patterns)")]
    UnknownDetector {
        /// The unknown name.
        name: String,
    },
    /// A pattern name that cannot appear inside a token, or that is taken.
    #[error("pattern name {name:?} must match [a-z][a-z0-9_]{{0,31}}, differ from the built-in detectors and be unique (it appears inside tokens)")]
    InvalidPatternName {
        /// The offending name.
        name: String,
    },
    /// A pattern's regex does not compile (or matches the empty string only).
    #[error("pattern \"{name}\": {reason}")]
    InvalidPattern {
        /// The pattern's name.
        name: String,
        /// The regex compiler's summary.
        reason: String,
    },
    /// A key file could not be opened or read.
    #[error("cannot read key file {}: {source}", path.display())]
    KeyFileRead {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key file readable or writable by group or others.
    #[error("key file {p} has mode {mode:04o} (group or others have access); run: chmod 600 {p}", p = path.display())]
    KeyFilePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A key file whose content is not one base64 line of 32 bytes.
    #[error("key file {} does not hold a base64-encoded 32-byte key on one line ({})", path.display(), describe(*reason))]
    KeyFileFormat {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: KeyFormat,
    },
    /// The key environment variable is unset or not Unicode.
    #[error("environment variable {var} is not set (it should hold a base64-encoded 32-byte key)")]
    KeyEnvMissing {
        /// The variable's name.
        var: String,
    },
    /// The key environment variable does not hold one base64 line of 32 bytes.
    #[error("environment variable {var} does not hold a base64-encoded 32-byte key ({})", describe(*reason))]
    KeyEnvFormat {
        /// The variable's name.
        var: String,
        /// What is wrong with it.
        reason: KeyFormat,
    },
    /// `keygen` refuses to overwrite.
    #[error("key file {} already exists; refusing to overwrite it", path.display())]
    KeyFileExists {
        /// The existing file.
        path: PathBuf,
    },
    /// `keygen` could not write the file.
    #[error("cannot write key file {}: {source}", path.display())]
    KeyFileWrite {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The operating system's random source failed.
    #[error("the system random number generator failed")]
    Random,
    /// Protected tool-call arguments could not be re-encoded as JSON (cannot happen).
    #[error("re-encoding protected tool-call arguments failed")]
    ArgumentsEncoding,
    /// AES-SIV refused to encrypt (cannot happen for spans of at most 64 bytes).
    #[error("encryption of a span failed")]
    Encrypt,
}

fn describe(reason: KeyFormat) -> String {
    match reason {
        KeyFormat::Empty => "it is empty".into(),
        KeyFormat::MultipleLines => "it has more than one line".into(),
        KeyFormat::NotBase64 => "it is not valid base64".into(),
        KeyFormat::WrongLength(n) => format!("it decodes to {n} bytes, not 32"),
    }
}
