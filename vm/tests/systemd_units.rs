//! The systemd units in vm/systemd, as systemd itself reads them: `systemd-analyze
//! verify` on each, with /usr/local/bin pointed at the workspace's binaries so every
//! ExecStart command exists; and every flag a unit passes is one the binary accepts
//! (its --help names it).

use std::path::Path;
use std::process::Command;

#[test]
#[ignore = "needs systemd-analyze and the workspace binaries (cargo build --workspace --bins)"]
fn units_verify_and_name_real_flags() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bins = root.join("target/debug");
    let dir = std::env::temp_dir().join(format!("skiff-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let units: Vec<_> = std::fs::read_dir(root.join("vm/systemd"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "service"))
        .collect();
    assert_eq!(units.len(), 4, "{units:?}");
    for unit in units {
        let text = std::fs::read_to_string(&unit).unwrap();
        let here = text.replace("/usr/local/bin/", &format!("{}/", bins.display()));
        let copy = dir.join(unit.file_name().unwrap());
        std::fs::write(&copy, &here).unwrap();
        let o = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&copy)
            .output()
            .expect("needs systemd-analyze");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() && err.trim().is_empty(),
            "{}: {err}",
            unit.display()
        );
        // Every --flag of ExecStart is one the binary knows.
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap();
        let mut words = exec.split_whitespace();
        let bin = bins.join(Path::new(words.next().unwrap()).file_name().unwrap());
        let mut help =
            String::from_utf8_lossy(&Command::new(&bin).arg("--help").output().unwrap().stdout)
                .into_owned();
        if exec.contains(" serve ") {
            help += &String::from_utf8_lossy(
                &Command::new(&bin)
                    .args(["serve", "--help"])
                    .output()
                    .unwrap()
                    .stdout,
            );
        }
        for flag in exec.split_whitespace().filter(|w| w.starts_with("--")) {
            assert!(
                help.contains(flag),
                "{}: {flag} is not a flag of {}",
                unit.display(),
                bin.display()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The join scripts start the daemons with the units' own fixed flags (launch.sh: under
/// systemd the unit runs, elsewhere the same command in a session), so a flag changed in
/// one place and not the other fails here instead of on someone's machine.
#[test]
fn join_scripts_start_what_the_units_start() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut checked = 0;
    for script in ["vm/cluster/node.sh", "vm/cluster/control-plane.sh"] {
        let text = std::fs::read_to_string(root.join(script)).unwrap();
        for line in text.lines() {
            let Some((var, value)) = line.split_once("_FIXED=\"") else {
                continue;
            };
            let name = var.to_lowercase();
            let fixed = value.trim_end_matches('"');
            let unit =
                std::fs::read_to_string(root.join(format!("vm/systemd/skiff-{name}.service")))
                    .unwrap_or_else(|e| panic!("{script}: {var}_FIXED has no unit: {e}"));
            let exec = unit
                .lines()
                .find_map(|l| l.strip_prefix("ExecStart="))
                .unwrap();
            assert_eq!(
                exec,
                format!(
                    "/usr/local/bin/skiff-{name} {fixed} $SKIFF_{}_ARGS",
                    name.to_uppercase()
                ),
                "{script} and skiff-{name}.service"
            );
            // And the script starts it with those flags.
            assert!(
                text.contains(&format!("launch {name} \"${var}_FIXED\"")),
                "{script} launches {name} with {var}_FIXED"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 4, "control, runtime, kubelet and proxy");
}
