//! The deployment files are checked by the tools that will read them: Prometheus's own
//! `promtool` checks the scrape config and the alert rules, and runs the rules' unit tests
//! (deploy/prometheus/alerts.test.yml: each alert fires when it should and not before). That
//! every metric the rules name is one the nodes really expose is checked against live nodes in
//! node_commands.rs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(deploy().join("prometheus"))
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool not runnable ({e}): install Debian's prometheus package (scripts/ensure-deps.sh does)")
        });
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn prometheus_config_and_alert_rules_pass_promtool() {
    promtool(&["check", "config", "prometheus.yml"]);
    promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["test", "rules", "alerts.test.yml"]);
}

/// Every query of every Grafana dashboard, with the dashboard variables filled in.
fn dashboard_queries() -> Vec<(String, String)> {
    let dir = deploy().join("grafana/dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let dashboard: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        assert!(
            dashboard["uid"].is_string() && dashboard["title"].is_string(),
            "{}",
            path.display()
        );
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap().replace("$instance", ".*");
                out.push((format!("{} / {}", path.display(), panel["title"]), expr));
            }
        }
    }
    assert!(out.len() >= 20, "the dashboards hold {} queries", out.len());
    out
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    // promtool parses rule expressions: check the dashboards' queries as recording rules.
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    for (i, (_, expr)) in dashboard_queries().iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: {}\n",
            serde_json::to_string(expr).unwrap()
        ));
    }
    let path = dir.path().join("dashboards.rules.yml");
    std::fs::write(&path, rules).unwrap();
    promtool(&["check", "rules", path.to_str().unwrap()]);
}
