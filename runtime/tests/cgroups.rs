//! Resource limits enforced through the host's cgroups (v1 or hybrid here, v2 in VMs):
//! memory → OOM kill, pids → fork refused, cpu quota → throttling, update and stats. Needs root.

use common::*;
use serde_json::json;
use skiff_fixtures as common;

fn cgroup_file(id: &str, controller: &str, file: &str) -> std::path::PathBuf {
    match skiff_runtime::cgroups::detect() {
        skiff_runtime::cgroups::Version::V2 => format!("/sys/fs/cgroup/skiff/{id}/{file}").into(),
        skiff_runtime::cgroups::Version::V1 => {
            format!("/sys/fs/cgroup/{controller}/skiff/{id}/{file}").into()
        }
    }
}

#[test]
#[ignore = "needs root"]
fn memory_limit_ooms() {
    require_root();
    let cli = Cli::new();
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived ${#x}",
    ]);
    b.config["linux"]["resources"]["memory"] = json!({"limit": 32 << 20});
    b.save();
    let (code, out, _) = cli.run_bundle(&unique("oom"), &b);
    assert!(
        !out.contains("survived"),
        "200 MB fit in a 32 MB cgroup: {out}"
    );
    assert_eq!(code, 137, "OOM-killed");
}

#[test]
#[ignore = "needs root"]
fn pids_limit_refuses_forks() {
    require_root();
    let cli = Cli::new();
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 5 & done; echo after",
    ]);
    b.config["linux"]["resources"]["pids"] = json!({"limit": 5});
    b.save();
    let (_, out, err) = cli.run_bundle(&unique("pids"), &b);
    assert!(err.contains("fork"), "forks beyond the limit fail: {err}");
    let _ = out;
}

#[test]
#[ignore = "needs root"]
fn cpu_quota_throttles_and_stats_report_it() {
    require_root();
    let cli = Cli::new();
    let mut b = Bundle::new(&["sh", "-c", "while :; do :; done"]);
    b.config["linux"]["resources"]["cpu"] =
        json!({"quota": 10000, "period": 100000, "shares": 512});
    b.save();
    let id = unique("cpu");
    cli.ok(&["run", "-d", "-b", path_str(&b.dir), &id]);
    assert_eq!(
        std::fs::read_to_string(cgroup_file(
            &id,
            "cpu",
            if skiff_runtime::cgroups::detect() == skiff_runtime::cgroups::Version::V2 {
                "cpu.max"
            } else {
                "cpu.cfs_quota_us"
            }
        ))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap(),
        "10000"
    );
    wait_for(
        || {
            let v: serde_json::Value =
                serde_json::from_str(&cli.ok(&["events", "--stats", &id])).unwrap();
            v["data"]["cpu"]["throttling"]["throttledPeriods"]
                .as_u64()
                .unwrap_or(0)
                > 2
        },
        "cpu throttling",
    );
    let v: serde_json::Value = serde_json::from_str(&cli.ok(&["events", "--stats", &id])).unwrap();
    assert_eq!(v["type"], "stats");
    assert!(v["data"]["cpu"]["usage"]["total"].as_u64().unwrap() > 0);
    assert!(v["data"]["pids"]["current"].as_u64().unwrap() >= 1);
    cli.ok(&["delete", "-f", &id]);
}

#[test]
#[ignore = "needs root"]
fn update_changes_limits() {
    require_root();
    let cli = Cli::new();
    let mut b = Bundle::new(&["sleep", "1000"]);
    b.config["linux"]["resources"]["pids"] = json!({"limit": 50});
    // A device the config allows beyond the defaults must stay usable across updates.
    b.config["linux"]["devices"] =
        json!([{"path": "/dev/extra", "type": "c", "major": 1, "minor": 1, "fileMode": 0o666}]);
    b.config["linux"]["resources"]["devices"] = json!([{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 1, "minor": 1, "access": "r"}]);
    b.save();
    let id = unique("update");
    cli.ok(&["run", "-d", "-b", path_str(&b.dir), &id]);
    let pids_max = cgroup_file(&id, "pids", "pids.max");
    assert_eq!(std::fs::read_to_string(&pids_max).unwrap().trim(), "50");
    cli.ok(&["update", "--pids-limit", "7", "--memory", "64m", &id]);
    assert_eq!(std::fs::read_to_string(&pids_max).unwrap().trim(), "7");
    let mem = if skiff_runtime::cgroups::detect() == skiff_runtime::cgroups::Version::V2 {
        cgroup_file(&id, "memory", "memory.max")
    } else {
        cgroup_file(&id, "memory", "memory.limit_in_bytes")
    };
    assert_eq!(
        std::fs::read_to_string(&mem).unwrap().trim(),
        (64u64 << 20).to_string()
    );
    let res = b.dir.join("res.json");
    std::fs::write(&res, json!({"pids": {"limit": 9}}).to_string()).unwrap();
    cli.ok(&["update", "--resources", path_str(&res), &id]);
    assert_eq!(std::fs::read_to_string(&pids_max).unwrap().trim(), "9");
    let v: serde_json::Value = serde_json::from_str(&cli.ok(&["events", "--stats", &id])).unwrap();
    assert_eq!(v["data"]["pids"]["limit"], 9);
    if skiff_runtime::cgroups::detect() == skiff_runtime::cgroups::Version::V1 {
        let list = std::fs::read_to_string(cgroup_file(&id, "devices", "devices.list")).unwrap();
        assert!(
            list.lines().any(|l| l == "c 1:1 r"),
            "device rule survived the updates: {list}"
        );
    }
    cli.ok(&["delete", "-f", &id]);
}

#[test]
#[ignore = "needs root"]
fn device_cgroup_denies_unlisted_devices() {
    require_root();
    let cli = Cli::new();
    // /dev/mem-like node (1:1) created in the container, but not allowed by the cgroup.
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "head -c 1 /dev/zero | wc -c; head -c 1 /dev/blocked >/dev/null 2>&1; echo blocked=$?",
    ]);
    b.config["linux"]["devices"] =
        json!([{"path": "/dev/blocked", "type": "c", "major": 1, "minor": 1, "fileMode": 0o666}]);
    b.save();
    let (code, out, err) = cli.run_bundle(&unique("dev"), &b);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("1\n"), "default devices allowed: {out}");
    assert!(
        out.contains("blocked=1"),
        "1:1 denied by the device cgroup: {out}"
    );
}
