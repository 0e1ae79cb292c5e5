//! The local certificate authority: created once, then used to mint one leaf per host.
//!
//! Leaves are ECDSA P-256 with their own key (never the CA key), pass strict X.509 checks
//! (authority key id, serverAuth, SAN), and are cached as ready `ServerConfig`s so a host
//! costs one mint for the cache's lifetime, even under concurrent first requests
//! (`moka`'s `try_get_with` runs one initializer per key).

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::server::{ProducesTickets, ServerSessionMemoryCache};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

/// File names inside the certs directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA private key (mode 0600, never served or logged).
pub const CA_KEY_FILE: &str = "ca.key";

/// Leaves are valid this long; the cache drops them well before.
const LEAF_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);
const LEAF_CACHE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
const LEAF_CACHE_SIZE: u64 = 10_000;

/// Errors of the CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Reading or writing a CA file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The CA files do not parse.
    #[error("{path}: not a usable CA: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The CA key file is readable by group or others (others only, when group read is
    /// allowed).
    #[error("{path}: CA key is readable by {who}; run: chmod 600 {path}")]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// "group or others", or "others".
        who: &'static str,
    },
    /// The CA already exists and `--force` was not given.
    #[error("{0}: a CA already exists (use --force to replace it)")]
    Exists(PathBuf),
    /// Minting failed.
    #[error("certificate generation failed: {0}")]
    Mint(String),
}

/// The CA's certificate and key, as loaded from `certs/`.
pub struct CaFiles {
    /// PEM of the CA certificate.
    pub cert_pem: String,
    /// DER of the CA certificate.
    pub cert_der: CertificateDer<'static>,
    key: KeyPair,
}

// === impl CaFiles ===

impl CaFiles {
    /// Loads `ca.pem` and `ca.key` from `dir`, refusing a key readable by group or others.
    pub fn load(dir: &Path) -> Result<CaFiles, CaError> {
        CaFiles::load_checked(dir, false)
    }

    /// Loads `ca.pem` and `ca.key` from `dir`. A key readable by others is always refused;
    /// one readable by its group only when `group_readable` is false. (A Kubernetes Secret
    /// volume is mode 0440 whenever the pod sets `fsGroup`, which a non-root sidecar needs
    /// to read it at all; the Secret is mounted into the sidecar alone.)
    pub fn load_checked(dir: &Path, group_readable: bool) -> Result<CaFiles, CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem = read(&cert_path)?;
        let meta = fs::metadata(&key_path).map_err(|source| CaError::Io {
            path: key_path.clone(),
            source,
        })?;
        {
            use std::os::unix::fs::PermissionsExt;
            let (mask, who) = if group_readable {
                (0o007, "others")
            } else {
                (0o077, "group or others")
            };
            if meta.permissions().mode() & mask != 0 {
                return Err(CaError::KeyPermissions {
                    path: key_path,
                    who,
                });
            }
        }
        let key_pem = read(&key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::Invalid {
            path: key_path.clone(),
            message: e.to_string(),
        })?;
        let cert_der = pem_cert(&cert_pem).ok_or_else(|| CaError::Invalid {
            path: cert_path.clone(),
            message: "no CERTIFICATE block".into(),
        })?;
        Ok(CaFiles {
            cert_pem,
            cert_der,
            key,
        })
    }

    /// Creates a new CA in `dir` (cert 0644, key 0600). Fails if one exists unless `force`.
    pub fn create(dir: &Path, force: bool) -> Result<CaFiles, CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        if !force && (cert_path.exists() || key_path.exists()) {
            return Err(CaError::Exists(cert_path));
        }
        fs::create_dir_all(dir).map_err(|source| CaError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaError::Mint(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        let host = hostname();
        dn.push(DnType::CommonName, format!("llm-egress local CA ({host})"));
        dn.push(DnType::OrganizationName, "llm-egress");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(3650);
        params.serial_number = Some(random_serial());
        let issuer =
            CertifiedIssuer::self_signed(params, key).map_err(|e| CaError::Mint(e.to_string()))?;
        let cert_pem = issuer.pem();
        let key_pem = issuer.key().serialize_pem();
        write_file(&key_path, key_pem.as_bytes(), 0o600)?;
        write_file(&cert_path, cert_pem.as_bytes(), 0o644)?;
        CaFiles::load(dir)
    }

    /// Loads the CA from `dir`, creating it first if neither file exists.
    /// Returns the CA and whether it was just created.
    pub fn load_or_create(dir: &Path) -> Result<(CaFiles, bool), CaError> {
        if !dir.join(CA_CERT_FILE).exists() && !dir.join(CA_KEY_FILE).exists() {
            return Ok((CaFiles::create(dir, false)?, true));
        }
        Ok((CaFiles::load(dir)?, false))
    }
}

/// Mints and caches per-host server configs.
pub struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    cache: moka::sync::Cache<String, Arc<ServerConfig>>,
    ticketer: Arc<dyn ProducesTickets>,
    sessions: Arc<ServerSessionMemoryCache>,
    minted: AtomicU64,
}

// === impl CertAuthority ===

impl CertAuthority {
    /// Builds the minting authority from loaded CA files.
    pub fn new(files: CaFiles) -> Result<CertAuthority, CaError> {
        let issuer = Issuer::from_ca_cert_der(&files.cert_der, files.key)
            .map_err(|e| CaError::Mint(e.to_string()))?;
        let ticketer =
            rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| CaError::Mint(e.to_string()))?;
        Ok(CertAuthority {
            issuer,
            ca_der: files.cert_der,
            cache: moka::sync::Cache::builder()
                .max_capacity(LEAF_CACHE_SIZE)
                .time_to_live(LEAF_CACHE_TTL)
                .build(),
            ticketer,
            sessions: ServerSessionMemoryCache::new(8192),
            minted: AtomicU64::new(0),
        })
    }

    /// The server config for `host` (a DNS name or an IP literal), minted on first use.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, CaError> {
        if let Some(cfg) = self.cache.get(host) {
            return Ok(cfg);
        }
        self.cache
            .try_get_with(host.to_owned(), || self.mint(host))
            .map_err(|e| CaError::Mint(e.to_string()))
    }

    /// How many leaves were minted since start.
    pub fn minted(&self) -> u64 {
        self.minted.load(Ordering::Relaxed)
    }

    /// DER of the CA certificate.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    fn mint(&self, host: &str) -> Result<Arc<ServerConfig>, CaError> {
        let mint_err = |e: rcgen::Error| CaError::Mint(e.to_string());
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(mint_err)?;
        let mut params = CertificateParams::default();
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.to_owned().try_into().map_err(mint_err)?),
        };
        params.subject_alt_names = vec![san];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + LEAF_VALIDITY;
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &self.issuer).map_err(mint_err)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut cfg = ServerConfig::builder_with_provider(super::provider())
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .map_err(|e| CaError::Mint(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone(), self.ca_der.clone()], key_der)
            .map_err(|e| CaError::Mint(e.to_string()))?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        cfg.ticketer = self.ticketer.clone();
        cfg.session_storage = self.sessions.clone();
        self.minted.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(host, "minted leaf certificate");
        Ok(Arc::new(cfg))
    }
}

/// Pin, subject and expiry of a certificate, for `ca show` and `pin`.
pub struct CertSummary {
    /// Subject, as text.
    pub subject: String,
    /// `sha256//…` pin of the SPKI.
    pub pin: String,
    /// Not-after, RFC 3339.
    pub not_after: String,
}

/// Summarizes a DER certificate.
pub fn summarize(der: &[u8]) -> Option<CertSummary> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let not_after = cert
        .validity()
        .not_after
        .to_datetime()
        .format(&time::format_description::well_known::Rfc3339)
        .ok()?;
    Some(CertSummary {
        subject: cert.subject().to_string(),
        pin: super::spki_pin(cert.public_key().raw),
        not_after,
    })
}

/// The first CERTIFICATE block of a PEM text.
pub fn pem_cert(pem: &str) -> Option<CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes()).next()?.ok()
}

fn read(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|source| CaError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a file atomically-enough for a CA: create with `mode`, then rename into place.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), CaError> {
    let tmp = path.with_extension("tmp");
    let io = |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

fn hostname() -> String {
    fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
