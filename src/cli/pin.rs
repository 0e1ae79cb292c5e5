//! `llm-egress pin URL`: connect, verify, and print one pin line per certificate of the
//! verified chain (leaf, intermediates, trust anchor), ready to paste into `pins = [...]`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use rustls_pki_types::ServerName;

use crate::tls::verify::{anchors_with, PinnedVerifier};

/// Runs `pin`. `connect` overrides the address (like curl's `--connect-to`).
pub async fn run(url: &str, ca: Option<&Path>, connect: Option<&str>) -> Result<()> {
    let u = url::Url::parse(url).with_context(|| format!("{url:?} is not a URL"))?;
    if u.scheme() != "https" {
        bail!("pin needs an https:// URL");
    }
    let host = u
        .host_str()
        .context("URL has no host")?
        .trim_matches(['[', ']'])
        .to_owned();
    let port = u.port_or_known_default().unwrap_or(443);
    let mut extra = Vec::new();
    if let Some(f) = ca {
        use rustls_pki_types::pem::PemObject;
        for c in rustls_pki_types::CertificateDer::pem_file_iter(f)
            .with_context(|| format!("reading {}", f.display()))?
        {
            extra.push(c.with_context(|| format!("parsing {}", f.display()))?);
        }
    }
    let anchors =
        anchors_with(&extra).map_err(|e| anyhow::anyhow!("bad --ca certificate: {e:?}"))?;
    let sink = Arc::new(Mutex::new(Vec::new()));
    let verifier = Arc::new(PinnedVerifier::new(anchors, Vec::new()).with_capture(sink.clone()));
    let cfg = crate::tls::client::client_config(verifier, false);
    let addr = connect.map_or_else(|| format!("{host}:{port}"), str::to_owned);
    let tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let name = ServerName::try_from(host.clone()).context("bad server name")?;
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS with {host} failed"))?;
    let chain_len = tls.get_ref().1.peer_certificates().map_or(0, |c| c.len());
    drop(tls);
    let pins = sink.lock().map(|g| g.clone()).unwrap_or_default();
    if pins.is_empty() {
        bail!("no verified chain was recorded");
    }
    println!("# {url} ({chain_len} certificates sent; verified path below)");
    for (i, p) in pins.iter().enumerate() {
        let role = if i == 0 {
            "leaf"
        } else if i == pins.len() - 1 {
            "trust anchor"
        } else {
            "intermediate"
        };
        println!("\"{p}\",  # {role}");
    }
    Ok(())
}
