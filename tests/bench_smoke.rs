//! The benchmark's smoke run (issue 7): `benches/loadgen.rs` is compiled into this test and
//! run in its `--smoke` configuration against the binary under test, writing to a temp
//! file. Only the report's shape is checked, never a timing (the machine is shared and
//! noisy). Running the driver in-process avoids a nested `cargo bench` (and a release
//! build) inside `cargo test`.

#[allow(dead_code)]
#[path = "../benches/loadgen.rs"]
mod loadgen;

#[test]
fn smoke_run_writes_every_section() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("benchmarks.md");
    let path = loadgen::main_with(["loadgen", "--smoke", "--out", out.to_str().expect("utf8")])
        .expect("smoke run");
    assert_eq!(path, out);
    let md = std::fs::read_to_string(&out).expect("report");
    for section in [
        "# Benchmarks",
        "## Machine and build",
        "## Summary: PRODUCT.md §11 targets",
        "## 1. Non-streaming chat completions",
        "## 2. Streaming",
        "## 3. First request to a new host (leaf minting)",
        "## 4. Memory",
        "## 5. Policy reload",
        "## 6. Optional features",
    ] {
        assert!(md.contains(section), "missing {section:?} in:\n{md}");
    }
    // Every measured mode and the machine facts are there.
    for needle in [
        "| direct | 1 |",
        "| inspect | 1 |",
        "| tunnel | 1 |",
        "| commit |",
        "| machine |",
        "| command |",
    ] {
        assert!(md.contains(needle), "missing {needle:?} in:\n{md}");
    }
    // Context switches per request are read for the processes on the path: the inspect row
    // ends with three figures (proxy / mock / load generator), the direct row has no proxy.
    let row = |mode: &str| {
        md.lines()
            .find(|l| l.starts_with(&format!("| {mode} | 1 |")))
            .unwrap_or_else(|| panic!("no {mode} row in:\n{md}"))
            .trim_end_matches(" |")
            .rsplit("| ")
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let figures = |cell: &str| -> Vec<Option<f64>> {
        cell.split(" / ").map(|f| f.trim().parse().ok()).collect()
    };
    let inspect = figures(&row("inspect"));
    assert_eq!(inspect.len(), 3, "inspect context switches: {inspect:?}");
    assert!(
        inspect.iter().all(|f| f.is_some_and(|f| f > 0.0)),
        "inspect context switches not all measured: {inspect:?}"
    );
    let direct = figures(&row("direct"));
    assert!(
        direct[0].is_none() && direct[1..].iter().all(Option::is_some),
        "direct context switches: {direct:?}"
    );
    // Each §11 target is marked, and each feature is either measured or "not available".
    for target in [
        "throughput, inspected HTTPS",
        "added latency p50",
        "leaf minting",
        "idle RSS",
        "concurrent open streams",
        "policy edit is enforced",
        "reloads under load",
        "routing costs",
        "protect costs",
        "tools costs",
    ] {
        let line = md
            .lines()
            .find(|l| l.contains(target))
            .unwrap_or_else(|| panic!("no target line {target:?} in:\n{md}"));
        assert!(
            line.contains("met") || line.contains("not available"),
            "unmarked target: {line}"
        );
    }
}

#[test]
fn percentiles_and_medians() {
    use loadgen::stats::{median, pct};
    let v: Vec<u64> = (1..=100).collect();
    assert_eq!(pct(&v, 50.0), 50);
    assert_eq!(pct(&v, 99.0), 99);
    assert_eq!(pct(&v, 100.0), 100);
    assert_eq!(pct(&[], 50.0), 0);
    assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
}

#[test]
fn event_stamps_are_taken_from_complete_events_only() {
    use loadgen::load::take_event_stamps;
    let mut b = bytes::BytesMut::from(
        &b"data: {\"x\":1,\"mock_ts_us\":123}\n\ndata: [DONE]\n\ndata: {\"mock_ts_us\":45"[..],
    );
    assert_eq!(take_event_stamps(&mut b), vec![123]);
    b.extend_from_slice(b"6}\n\n");
    assert_eq!(take_event_stamps(&mut b), vec![456]);
    assert!(b.is_empty());
}
