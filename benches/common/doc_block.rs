//! Writes a generated table into docs/benchmarks.md between `<!-- NAME:begin -->` and
//! `<!-- NAME:end -->`, so the hand-written text around it survives a new run.

/// With `--out FILE` among the arguments, replaces the `name` block of FILE with `rows`
/// (or appends `heading` and the block when FILE has none yet).
pub fn write_from_args(name: &str, rows: &str, heading: &str) {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
    else {
        return;
    };
    let doc = std::fs::read_to_string(path).unwrap_or_default();
    let (begin, end) = (
        format!("<!-- {name}:begin -->"),
        format!("<!-- {name}:end -->"),
    );
    let block = format!("{begin}\n{rows}{end}");
    let new = match (doc.find(&begin), doc.find(&end)) {
        (Some(a), Some(b)) if b > a => {
            format!("{}{}{}", &doc[..a], block, &doc[b + end.len()..])
        }
        _ => format!("{doc}\n{heading}\n\n{block}\n"),
    };
    if let Err(e) = std::fs::write(path, new) {
        eprintln!("cannot write {path}: {e}");
        std::process::exit(1);
    }
}
