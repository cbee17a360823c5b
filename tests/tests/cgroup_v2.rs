//! skiff-runtime on a real cgroup v2 kernel (inside a VM): memory.max OOM-kills,
//! pids.max refuses forks, cpu.max throttles, the eBPF device filter denies devices,
//! negative oomScoreAdj works with CAP_SYS_RESOURCE.

use serde_json::json;
use skiff_tests::*;

/// These tests are `#[ignore = "needs a VM"]`: once asked for, a missing VM is a failure.
fn require_vm() {
    if let Some(why) = unavailable() {
        panic!("needs a VM: {why}");
    }
}

#[test]
#[ignore = "needs a VM (QEMU)"]
fn memory_max_ooms() {
    require_vm();
    let vm = cluster();
    let mut cfg = config(&[
        "sh",
        "-c",
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
    ]);
    cfg["linux"]["resources"]["memory"] = json!({"limit": 32 << 20});
    let out = vm.sh(
        "node-1",
        &format!(
            "{}\n{RUNTIME} run -b $B mem; echo exit=$?",
            bundle_script("/tmp/t-mem", &cfg)
        ),
    );
    assert!(
        out.stdout.contains("exit=137"),
        "OOM kill expected: {out:?}"
    );
    assert!(!out.stdout.contains("survived"));
}

#[test]
#[ignore = "needs a VM (QEMU)"]
fn pids_max_and_memory_files() {
    require_vm();
    let vm = cluster();
    let mut cfg = config(&["sleep", "1000"]);
    cfg["linux"]["resources"]["pids"] = json!({"limit": 6});
    cfg["linux"]["resources"]["memory"] =
        json!({"limit": 64 << 20, "reservation": 16 << 20, "swap": 96 << 20});
    cfg["linux"]["resources"]["cpu"] =
        json!({"shares": 1024, "quota": 20000, "period": 100000, "cpus": "0", "mems": "0"});
    cfg["linux"]["resources"]["blockIO"] = json!({"weight": 500});
    cfg["linux"]["resources"]["hugepageLimits"] = json!([{"pageSize": "2MB", "limit": 4194304}]);
    cfg["linux"]["resources"]["unified"] =
        json!({"memory.oom.group": "1", "memory.high": "50331648"});
    let r = vm.sh(
        "node-1",
        &format!(
            "{}\n{RUNTIME} run -d -b $B pids; D=/sys/fs/cgroup/skiff/pids; \
             cat $D/pids.max $D/memory.max $D/memory.low $D/memory.swap.max $D/cpu.weight $D/cpu.max; \
             cat $D/cpuset.cpus $D/io.weight $D/hugetlb.2MB.max $D/memory.oom.group $D/memory.high >&2; \
             {RUNTIME} exec pids sh -c 'for i in 1 2 3 4 5 6 7 8; do sleep 30 & done' 2>&1 | grep -c fork; \
             {RUNTIME} delete -f pids",
            bundle_script("/tmp/t-pids", &cfg)
        ),
    );
    assert!(r.ok(), "{r:?}");
    let out = r.stdout;
    let extra: Vec<&str> = r.stderr.lines().collect();
    let io_weight = format!("default {}", 1 + (490 * 9999) / 990);
    assert_eq!(
        extra,
        ["0", io_weight.as_str(), "4194304", "1", "50331648"],
        "cpuset, io.weight from blkio 500, hugetlb, unified"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        &lines[..6],
        [
            "6",
            &(64u64 << 20).to_string(),
            &(16u64 << 20).to_string(),
            &(32u64 << 20).to_string(),
            "39",
            "20000 100000"
        ],
        "{out}"
    );
    assert!(
        lines[6].parse::<u32>().unwrap() >= 1,
        "forks beyond pids.max fail: {out}"
    );
}

#[test]
#[ignore = "needs a VM (QEMU)"]
fn cpu_max_throttles() {
    require_vm();
    let vm = cluster();
    let mut cfg = config(&["sh", "-c", "while :; do :; done"]);
    cfg["linux"]["resources"]["cpu"] = json!({"quota": 10000, "period": 100000});
    let out = vm.sh_ok(
        "node-1",
        &format!(
            "{}\n{RUNTIME} run -d -b $B cpu; sleep 2; grep nr_throttled /sys/fs/cgroup/skiff/cpu/cpu.stat; \
             {RUNTIME} events --stats cpu; {RUNTIME} delete -f cpu",
            bundle_script("/tmp/t-cpu", &cfg)
        ),
    );
    let throttled: u64 = out
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(throttled > 0, "{out}");
    let ev: serde_json::Value = serde_json::from_str(out.lines().nth(1).unwrap()).unwrap();
    assert!(
        ev["data"]["cpu"]["throttling"]["throttledPeriods"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[test]
#[ignore = "needs a VM (QEMU)"]
fn ebpf_device_filter_denies() {
    require_vm();
    let vm = cluster();
    let mut cfg = config(&[
        "sh",
        "-c",
        "head -c 1 /dev/zero | wc -c; head -c 1 /dev/blocked >/dev/null 2>&1; echo blocked=$?",
    ]);
    cfg["linux"]["devices"] =
        json!([{"path": "/dev/blocked", "type": "c", "major": 1, "minor": 1, "fileMode": 0o666}]);
    let out = vm.sh_ok(
        "node-1",
        &format!(
            "{}\n{RUNTIME} run -b $B dev",
            bundle_script("/tmp/t-dev", &cfg)
        ),
    );
    assert!(out.starts_with("1\n"), "default devices allowed: {out}");
    assert!(
        out.contains("blocked=1"),
        "1:1 denied by the BPF filter: {out}"
    );
}

#[test]
#[ignore = "needs a VM (QEMU)"]
fn pause_resume_and_negative_oom_score() {
    require_vm();
    let vm = cluster();
    let mut cfg = config(&["sleep", "1000"]);
    cfg["process"]["oomScoreAdj"] = json!(-998);
    let out = vm.sh_ok(
        "node-1",
        &format!(
            "{}\n{RUNTIME} run -d -b $B fr; P=$({RUNTIME} state fr | grep '\"pid\"' | tr -dc 0-9); cat /proc/$P/oom_score_adj; \
             {RUNTIME} pause fr; {RUNTIME} state fr | grep status; cat /sys/fs/cgroup/skiff/fr/cgroup.freeze; \
             {RUNTIME} resume fr; {RUNTIME} state fr | grep status; {RUNTIME} delete -f fr; ls /sys/fs/cgroup/skiff",
            bundle_script("/tmp/t-fr", &cfg)
        ),
    );
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(
        lines[0], "-998",
        "CAP_SYS_RESOURCE in the VM allows negative values: {out}"
    );
    assert!(
        lines[1].contains("paused") && lines[2] == "1" && lines[3].contains("running"),
        "{out}"
    );
    assert!(!out.contains("fr\n"), "cgroup removed: {out}");
}
