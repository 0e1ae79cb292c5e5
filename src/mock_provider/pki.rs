//! A throwaway PKI for serving mock providers over TLS: root → intermediate → one leaf for
//! the given names, written as PEM files. `llm-egress demo` and the benchmark use it; the
//! proxy trusts the root through `[upstream] extra_roots` and can pin the intermediate.

use std::io;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The files of a mock PKI and the pins a policy can name.
#[derive(Debug, Clone)]
pub struct MockPki {
    /// The root certificate (PEM), for `[upstream] extra_roots` and direct clients.
    pub root_pem: PathBuf,
    /// Leaf + intermediate (PEM), for the mock's `--tls-cert`.
    pub chain: PathBuf,
    /// The leaf's private key (PEM, mode 0600), for the mock's `--tls-key`.
    pub key: PathBuf,
    /// `sha256//…` pin of the intermediate's key, for `pins = [...]`.
    pub inter_pin: String,
    /// `sha256//…` pin of the root's key.
    pub root_pin: String,
}

/// Parameters of a test CA named `cn` (unconstrained, may sign certificates).
pub fn ca_params(cn: &str) -> CertificateParams {
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

/// Parameters of a server leaf for `names` (the first is its common name).
///
/// # Errors
///
/// When a name is neither a DNS name nor an IP address.
pub fn leaf_params(names: &[String]) -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(names.to_vec())?;
    if let Some(cn) = names.first() {
        p.distinguished_name.push(DnType::CommonName, cn.as_str());
    }
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

/// `sha256//…` pin of the key in a DER certificate.
///
/// # Errors
///
/// When `der` is not a certificate.
pub fn cert_pin(der: &[u8]) -> io::Result<String> {
    let (_, c) = x509_parser::parse_x509_certificate(der).map_err(io::Error::other)?;
    Ok(crate::tls::spki_pin(c.public_key().raw))
}

impl MockPki {
    /// Creates `root.pem`, `leaf-chain.pem` and `leaf-key.pem` in `dir` (which must exist and
    /// not hold them yet).
    /// `label` names the CAs ("`label` root"); the leaf is valid for `names` (DNS names,
    /// wildcards allowed; the first is its common name).
    ///
    /// # Errors
    ///
    /// When a key or certificate cannot be made, or a file cannot be written.
    pub fn create(dir: &Path, label: &str, names: &[String]) -> io::Result<MockPki> {
        let root = CertifiedIssuer::self_signed(
            ca_params(&format!("{label} root")),
            KeyPair::generate().map_err(io::Error::other)?,
        )
        .map_err(io::Error::other)?;
        let inter = CertifiedIssuer::signed_by(
            ca_params(&format!("{label} intermediate")),
            KeyPair::generate().map_err(io::Error::other)?,
            &root,
        )
        .map_err(io::Error::other)?;
        let p = leaf_params(names).map_err(io::Error::other)?;
        let key = KeyPair::generate().map_err(io::Error::other)?;
        let leaf = p.signed_by(&key, &inter).map_err(io::Error::other)?;
        let pki = MockPki {
            root_pem: dir.join("root.pem"),
            chain: dir.join("leaf-chain.pem"),
            key: dir.join("leaf-key.pem"),
            inter_pin: cert_pin(inter.der())?,
            root_pin: cert_pin(root.der())?,
        };
        std::fs::write(&pki.root_pem, root.pem())?;
        std::fs::write(&pki.chain, format!("{}{}", leaf.pem(), inter.pem()))?;
        crate::audit::chain::write_private(&pki.key, key.serialize_pem().as_bytes(), false)?;
        Ok(pki)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_serves_tls_for_its_names_and_the_pins_name_its_cas() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["*.mock.test".to_owned(), "api.mock.test".to_owned()];
        let pki = MockPki::create(dir.path(), "t", &names).unwrap();
        // The mock accepts the pair (the key matches the leaf).
        super::super::tls_config_from_files(&pki.chain, &pki.key).unwrap();
        let chain = std::fs::read_to_string(&pki.chain).unwrap();
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
        assert_ne!(pki.inter_pin, pki.root_pin);
        assert!(crate::tls::parse_pin(&pki.inter_pin).is_some());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&pki.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "leaf key mode {mode:o}");
    }
}
