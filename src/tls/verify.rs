//! Upstream certificate verification: full WebPKI path building against the trust
//! anchors, then the endpoint's SPKI pins checked *inside* webpki's path callback.
//!
//! Why inside: rustls hands us the chain the server sent, usually without its root, and
//! webpki may find several candidate paths (cross-signed roots). Checking the pins in the
//! `verify_path` callback lets webpki try the next path when one does not carry a pin,
//! and gives us the anchor of the path, so a root can be pinned too (PITFALLS.md).

use std::fmt;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use sha2::Digest;

/// No path carried a pinned key. Carries the pins actually observed, ready to paste.
#[derive(Debug, Clone)]
pub struct PinMismatch {
    /// Pins of the leaf, intermediates and anchor of the verified path (leaf first).
    pub observed: Vec<String>,
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no certificate in the upstream chain matches a configured pin (observed: {})",
            self.observed.join(", ")
        )
    }
}

impl std::error::Error for PinMismatch {}

/// Any other verification failure, with webpki's reason.
#[derive(Debug, Clone)]
pub struct VerifyFailed(pub String);

impl fmt::Display for VerifyFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upstream certificate rejected: {}", self.0)
    }
}

impl std::error::Error for VerifyFailed {}

/// Verifies upstream chains against `anchors`, then requires one of `pins` on the path.
pub struct PinnedVerifier {
    anchors: Vec<TrustAnchor<'static>>,
    pins: Vec<[u8; 32]>,
    algs: WebPkiSupportedAlgorithms,
    /// Records the pins of the last verified path, for `llm-egress pin`.
    capture: Option<Arc<Mutex<Vec<String>>>>,
}

impl fmt::Debug for PinnedVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedVerifier")
            .field("anchors", &self.anchors.len())
            .field("pins", &self.pins.len())
            .finish()
    }
}

// === impl PinnedVerifier ===

impl PinnedVerifier {
    /// A verifier over `anchors` requiring one of `pins` (none: WebPKI only).
    pub fn new(anchors: Vec<TrustAnchor<'static>>, pins: Vec<[u8; 32]>) -> Self {
        PinnedVerifier {
            anchors,
            pins,
            algs: super::provider().signature_verification_algorithms,
            capture: None,
        }
    }

    /// Also record the pins of each verified path into `sink` (leaf first, anchor last).
    pub fn with_capture(mut self, sink: Arc<Mutex<Vec<String>>>) -> Self {
        self.capture = Some(sink);
        self
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(tls_error)?;
        let observed: Mutex<Option<Vec<String>>> = Mutex::new(None);
        let check_path = |path: &webpki::VerifiedPath<'_>| -> Result<(), webpki::Error> {
            let mut spkis = Vec::with_capacity(4);
            spkis.push(path.end_entity().subject_public_key_info());
            for c in path.intermediate_certificates() {
                spkis.push(c.subject_public_key_info());
            }
            spkis.push(webpki::spki_for_anchor(path.anchor()));
            let digests: Vec<[u8; 32]> = spkis
                .iter()
                .map(|s| sha2::Sha256::digest(s.as_ref()).into())
                .collect();
            if self.pins.is_empty() || digests.iter().any(|d| self.pins.contains(d)) {
                if let Some(sink) = &self.capture {
                    if let Ok(mut g) = sink.lock() {
                        *g = spkis.iter().map(|s| super::spki_pin(s.as_ref())).collect();
                    }
                }
                return Ok(());
            }
            if let Ok(mut g) = observed.lock() {
                *g = Some(spkis.iter().map(|s| super::spki_pin(s.as_ref())).collect());
            }
            // Any error makes webpki try the next candidate path.
            Err(webpki::Error::UnknownIssuer)
        };
        let result = cert.verify_for_usage(
            self.algs.all,
            &self.anchors,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            Some(&check_path),
        );
        if let Err(e) = result {
            let seen = observed.lock().ok().and_then(|mut g| g.take());
            return Err(match seen {
                Some(observed) => rustls::Error::InvalidCertificate(CertificateError::Other(
                    OtherError(Arc::new(PinMismatch { observed })),
                )),
                None => tls_error(e),
            });
        }
        cert.verify_is_valid_for_subject_name(server_name)
            .map_err(tls_error)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

fn tls_error(e: webpki::Error) -> rustls::Error {
    let kind = match e {
        webpki::Error::UnknownIssuer => CertificateError::UnknownIssuer,
        webpki::Error::CertExpired { .. } => CertificateError::Expired,
        webpki::Error::CertNotValidYet { .. } => CertificateError::NotValidYet,
        webpki::Error::CertNotValidForName(_) => CertificateError::NotValidForName,
        webpki::Error::CertRevoked => CertificateError::Revoked,
        webpki::Error::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        other => CertificateError::Other(OtherError(Arc::new(VerifyFailed(format!("{other:?}"))))),
    };
    rustls::Error::InvalidCertificate(kind)
}

/// Finds a [`PinMismatch`] anywhere in an error's source chain (tokio-rustls wraps the
/// rustls error in an `io::Error`, hyper wraps that again).
pub fn find_pin_mismatch(err: &(dyn std::error::Error + 'static)) -> Option<PinMismatch> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(p) = e.downcast_ref::<PinMismatch>() {
            return Some(p.clone());
        }
        if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(o))) =
            e.downcast_ref::<rustls::Error>()
        {
            if let Some(p) = o.0.downcast_ref::<PinMismatch>() {
                return Some(p.clone());
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(p) = find_pin_mismatch(inner) {
                    return Some(p);
                }
            }
        }
        cur = e.source();
    }
    None
}

/// The Mozilla trust anchors plus `extra` certificates (DER) as anchors.
pub fn anchors_with(
    extra: &[CertificateDer<'static>],
) -> Result<Vec<TrustAnchor<'static>>, webpki::Error> {
    let mut anchors: Vec<TrustAnchor<'static>> = webpki_roots::TLS_SERVER_ROOTS.to_vec();
    for der in extra {
        anchors.push(webpki::anchor_from_trusted_cert(der)?.to_owned());
    }
    Ok(anchors)
}
