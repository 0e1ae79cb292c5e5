//! `llm-egress ca init|show|bundle`.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::tls::ca::{summarize, CaFiles, CA_CERT_FILE};

/// How to trust the CA, printed by `ca init`, `ca show` and a first `run`.
pub fn trust_hint(certs: &Path) -> String {
    let ca = certs.join(CA_CERT_FILE);
    let ca = ca.display();
    format!(
        "Trust it for one app:\n  \
         export SSL_CERT_FILE=$(pwd)/{certs}/bundle.pem   # after: llm-egress ca bundle --out {certs}/bundle.pem\n  \
         export REQUESTS_CA_BUNDLE=$SSL_CERT_FILE NODE_EXTRA_CA_CERTS={ca}\n  \
         curl --cacert {ca} ...\n\
         Trust it system-wide (Debian/Ubuntu):\n  \
         sudo cp {ca} /usr/local/share/ca-certificates/llm-egress.crt && sudo update-ca-certificates",
        certs = certs.display()
    )
}

/// `ca init`.
pub fn init(certs: &Path, force: bool) -> Result<()> {
    let files = CaFiles::create(certs, force)?;
    println!("created {}", certs.join(CA_CERT_FILE).display());
    print_summary(&files)?;
    println!("{}", trust_hint(certs));
    Ok(())
}

/// `ca show`.
pub fn show(certs: &Path) -> Result<()> {
    let files = CaFiles::load(certs).with_context(|| {
        format!(
            "no usable CA in {} (run: llm-egress ca init)",
            certs.display()
        )
    })?;
    println!("certificate: {}", certs.join(CA_CERT_FILE).display());
    print_summary(&files)?;
    println!("{}", trust_hint(certs));
    Ok(())
}

fn print_summary(files: &CaFiles) -> Result<()> {
    let s = summarize(&files.cert_der).context("the CA certificate does not parse")?;
    println!("subject:    {}", s.subject);
    println!("spki pin:   {}", s.pin);
    println!("not after:  {}", s.not_after);
    Ok(())
}

/// `ca bundle`: the Mozilla roots plus the proxy CA, for `SSL_CERT_FILE` /
/// `REQUESTS_CA_BUNDLE`, which replace the default store rather than add to it.
pub fn bundle(certs: &Path, out: Option<&Path>) -> Result<()> {
    let files = CaFiles::load(certs).with_context(|| {
        format!(
            "no usable CA in {} (run: llm-egress ca init)",
            certs.display()
        )
    })?;
    let mut text = String::new();
    text.push_str("# llm-egress local CA\n");
    text.push_str(&files.cert_pem);
    for der in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        text.push_str(&pem_encode(der.as_ref()));
    }
    match out {
        Some(p) => {
            std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
            eprintln!(
                "wrote {} ({} roots + the proxy CA)",
                p.display(),
                webpki_root_certs::TLS_SERVER_ROOT_CERTS.len()
            );
        }
        None => std::io::stdout().write_all(text.as_bytes())?,
    }
    Ok(())
}

fn pem_encode(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE-----\n");
    s
}
