//! kill -9 in the middle of a write stream loses nothing that was acknowledged.

use skiff_control::store::Store;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = std::env::temp_dir().join(format!("skiff-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_skiff-store-bench"))
        .arg("crash-writer")
        .arg(&dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut last = 0u64;
    for _ in 0..500 {
        last = lines.next().unwrap().unwrap().parse().unwrap();
    }
    // SIGKILL while it keeps writing: no chance to flush or close anything.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    let s = Store::open(&dir).unwrap();
    for i in 0..=last {
        let kv = s
            .get(&format!("/k/{i:08}"))
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged write {i} lost"));
        assert_eq!(kv.value, i.to_le_bytes());
        assert_eq!(kv.mod_revision, i as i64 + 1);
    }
    let rev = s.revision().unwrap();
    assert!(
        rev as u64 > last,
        "revision {rev} covers the acknowledged writes"
    );
    // The reopened store keeps going from where it stopped.
    let next = s
        .put(
            "/k/after",
            b"x".to_vec(),
            skiff_control::store::Precondition::Absent,
        )
        .unwrap();
    assert_eq!(next.mod_revision, s.revision().unwrap());
    drop(s);
    std::fs::remove_dir_all(&dir).unwrap();
}
