//! `llm-egress check`: validate a policy and print what it allows.

use std::path::Path;

use crate::policy::model::Mode;

/// Runs `check`; returns the exit code (0 valid, 1 invalid).
pub fn run(path: &Path) -> i32 {
    let policy = match crate::reload::load(path, None, None) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("policy {} is NOT valid ({} error(s)); the proxy would refuse it and keep the last good policy", path.display(), e.0.len());
            return 1;
        }
    };
    println!(
        "policy {} is valid (hash {})",
        path.display(),
        &policy.hash[..16.min(policy.hash.len())]
    );
    println!("allowed endpoints ({}):", policy.endpoints.len());
    for e in &policy.endpoints {
        let methods = e.methods.as_ref().map_or_else(
            || "all methods".to_owned(),
            |m| m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(","),
        );
        let pins = policy
            .model
            .allow
            .iter()
            .find(|a| *a.name == *e.name)
            .and_then(|a| a.pins.as_ref())
            .map_or(0, Vec::len);
        println!(
            "  {:<16} {}://{}:{}{}  {}  {}  {}",
            e.name,
            if e.https { "https" } else { "http" },
            e.host,
            e.port,
            e.prefix,
            match e.mode {
                Mode::Inspect => "inspect",
                Mode::Tunnel => "tunnel",
            },
            methods,
            if pins == 0 {
                "no pins (WebPKI only)".to_owned()
            } else {
                format!("{pins} pin(s)")
            }
        );
    }
    println!("everything else is denied");
    0
}
