//! TLS on both legs: the local CA that mints leaves for clients (`ca`), the upstream
//! verifier that runs WebPKI and then the endpoint's pins (`verify`), and the pooled
//! upstream connector (`client`).

pub mod ca;
pub mod client;
pub mod verify;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

/// The one crypto provider every rustls config in the process is built with (aws-lc-rs).
/// Building configs with `builder_with_provider` avoids the panic rustls raises when two
/// providers are compiled in and none is installed as the default.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// Pin of a SubjectPublicKeyInfo: `sha256//` + standard base64 of its SHA-256, the format
/// of curl's `--pinnedpubkey`.
pub fn spki_pin(spki_der: &[u8]) -> String {
    use base64::Engine;
    use sha2::Digest;
    let digest = sha2::Sha256::digest(spki_der);
    format!(
        "sha256//{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// Parses a `sha256//BASE64` pin into its 32 digest bytes.
pub fn parse_pin(pin: &str) -> Option<[u8; 32]> {
    use base64::Engine;
    let b64 = pin.strip_prefix("sha256//")?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    bytes.try_into().ok()
}
