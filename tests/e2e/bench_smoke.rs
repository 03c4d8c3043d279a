//! `host bench --quick` and `host bench --soak` keep working: every figure is produced and
//! written, and a short soak drains what it sent. It asserts no
//! speed — benchmarks are measured by `host bench`, not by tests.

use crate::harness::{host_binary, workspace_root};

const FIGURES: &[&str] = &[
    "B0-FULL",
    "B0-NORMAL",
    "B1",
    "P1",
    "P1-kept",
    "P1-HTTP",
    "P2-native",
    "P3",
    "P4-backlog",
    "H1",
    "P4-sched",
    "P4-stream",
    "B2",
    "B0-pg",
    "P1-pg",
    "P4-pg",
    "P1-pg-3",
    "P4-pg-3",
    "P5",
    "S1",
    "S1-pg",
    "R1",
    "R1-run",
    "R1-python",
    "R1-javascript",
    "P8",
    "L-rust",
    "L-python",
    "L-javascript",
    "L-c",
];

/// `host bench --quick ARGS --out OUT`, from the repository's root.
fn quick_bench(args: &[&str], out: &std::path::Path) -> std::process::Output {
    std::process::Command::new(host_binary())
        .current_dir(workspace_root())
        .args(["bench", "--quick"])
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .expect("running host bench")
}

/// The `bench.json` a successful run wrote to `out`.
fn report(output: &std::process::Output, out: &std::path::Path) -> serde_json::Value {
    assert!(
        output.status.success(),
        "host bench failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&std::fs::read(out.join("bench.json")).unwrap()).unwrap()
}

/// The ids of the report's figures, in order.
fn figure_ids(report: &serde_json::Value) -> Vec<&str> {
    report["figures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect()
}

#[test]
fn quick_bench_writes_every_figure() {
    let out = tempfile::tempdir().unwrap();
    let report = report(&quick_bench(&[], out.path()), out.path());
    assert_eq!(figure_ids(&report), FIGURES);
    for figure in report["figures"].as_array().unwrap() {
        let value = figure["value"].as_f64().unwrap();
        assert!(
            value.is_finite() && value > 0.0,
            "figure {} has no measurement: {value}",
            figure["id"]
        );
    }
    let markdown = std::fs::read_to_string(out.path().join("bench.md")).unwrap();
    for ratio in [
        "P1 / B0-FULL",
        "P1 / B2",
        "P4-stream / P1",
        "P1-pg / B0-pg",
        "H1 / P4-backlog",
        "P4-sched / P4-backlog",
        "S1 / P1",
        "S1-pg / P1-pg",
    ] {
        assert!(markdown.contains(&format!("| {ratio} |")), "{markdown}");
    }
}

#[test]
fn only_measures_the_figures_named_and_the_ratios_between_them() {
    let out = tempfile::tempdir().unwrap();
    let report = report(
        &quick_bench(&["--only", "b0-pg,P4-pg"], out.path()),
        out.path(),
    );
    assert_eq!(figure_ids(&report), ["B0-pg", "P4-pg"]);
    let ratios: Vec<&str> = report["ratios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap())
        .collect();
    assert_eq!(ratios, ["P4-pg / B0-pg"]);
    assert!(
        report["command"]
            .as_str()
            .unwrap()
            .ends_with("--only b0-pg,P4-pg"),
        "{report}"
    );

    let output = quick_bench(&["--only", "P9"], out.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("--only: no figure `P9`; the figures are B0-FULL, B0-NORMAL"),
        "{stderr}"
    );
}

#[test]
fn a_short_soak_delivers_every_order_and_reports_the_backlog() {
    // The example plugins are built by the fixtures; the soak loads them from `plugins/`.
    crate::harness::component(crate::harness::ORDERS);
    let out = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(host_binary())
        .current_dir(workspace_root())
        .args([
            "bench",
            "--soak",
            "--soak-rate",
            "20",
            "--soak-seconds",
            "3",
        ])
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("running host bench --soak");
    assert!(
        output.status.success(),
        "host bench --soak failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("soak.json")).unwrap()).unwrap();
    assert!(report["orders_sent"].as_u64().unwrap() >= 40, "{report}");
    assert_eq!(report["orders_failed"], 0, "{report}");
    assert!(report["samples"].as_array().unwrap().len() >= 3, "{report}");
    assert_eq!(report["pending_after_drain"], 0, "{report}");
}
