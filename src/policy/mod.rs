//! Policy: the file model (`model`), loading and validation, compilation into the
//! structures the request path reads (`compile`), and hot reload.

pub mod compile;
pub mod model;

pub use compile::{Policy, Verdict};

/// Temporary single-file loader until the full loader lands.
pub fn load_simple(path: &std::path::Path) -> Result<(model::PolicyFile, String), String> {
    use sha2::Digest;
    let mut files: Vec<std::path::PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect()
    } else {
        vec![path.to_path_buf()]
    };
    files.sort();
    let mut merged = model::PolicyFile::default();
    let mut h = sha2::Sha256::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        h.update(text.as_bytes());
        let m: model::PolicyFile =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", f.display()))?;
        merged.allow.extend(m.allow);
        if m.upstream.is_some() {
            merged.upstream = m.upstream;
        }
        if m.audit.is_some() {
            merged.audit = m.audit;
        }
    }
    Ok((merged, hex::encode(h.finalize())))
}
