//! The benchmark's test PKI: root → intermediate → one leaf for `*.bench.test` (and
//! `api.bench.test`), written to a temp dir. The mock provider serves the leaf; the
//! proxy trusts the root through `[upstream] extra_roots` and pins the intermediate.

use std::path::PathBuf;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The domain every benchmark host name lives under.
pub const DOMAIN: &str = "bench.test";

/// Files of the test PKI.
pub struct Pki {
    /// PEM of the root (trusted by direct and tunnel clients, and by the proxy upstream).
    pub root_pem: PathBuf,
    /// Leaf + intermediate chain served by the mock.
    pub chain: PathBuf,
    /// The leaf's private key.
    pub key: PathBuf,
    /// `sha256//…` SPKI pin of the intermediate, for `pins = [...]`.
    pub inter_pin: String,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.use_authority_key_identifier_extension = true;
    p
}

/// `sha256//BASE64` of a certificate's SubjectPublicKeyInfo (the `curl --pinnedpubkey` form).
fn spki_pin(der: &[u8]) -> Result<String> {
    use base64::Engine;
    use sha2::Digest;
    let (_, c) = x509_parser::parse_x509_certificate(der).context("parsing a test cert")?;
    let d = sha2::Sha256::digest(c.public_key().raw);
    Ok(format!(
        "sha256//{}",
        base64::engine::general_purpose::STANDARD.encode(d)
    ))
}

impl Pki {
    /// Creates the PKI in `dir`.
    pub fn create(dir: &std::path::Path) -> Result<Pki> {
        let root =
            CertifiedIssuer::self_signed(ca_params("llm-egress bench root"), KeyPair::generate()?)?;
        let inter = CertifiedIssuer::signed_by(
            ca_params("llm-egress bench intermediate"),
            KeyPair::generate()?,
            &root,
        )?;
        let names = vec![format!("*.{DOMAIN}"), format!("api.{DOMAIN}")];
        let mut p = CertificateParams::new(names)?;
        p.distinguished_name
            .push(DnType::CommonName, format!("api.{DOMAIN}"));
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let leaf = p.signed_by(&key, &inter)?;
        let pki = Pki {
            root_pem: dir.join("root.pem"),
            chain: dir.join("leaf-chain.pem"),
            key: dir.join("leaf-key.pem"),
            inter_pin: spki_pin(inter.der())?,
        };
        std::fs::write(&pki.root_pem, root.pem())?;
        std::fs::write(&pki.chain, format!("{}{}", leaf.pem(), inter.pem()))?;
        std::fs::write(&pki.key, key.serialize_pem())?;
        Ok(pki)
    }
}
