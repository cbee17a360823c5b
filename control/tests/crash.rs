//! kill -9 in the middle of a write stream loses nothing that was acknowledged, and
//! nothing anyone saw: a revision a watcher was shown is the same write after recovery
//! (never reused for another), and a torn WAL tail is cut with a warning.

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
        assert_eq!(kv.value[..], i.to_le_bytes()[..]);
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

#[test]
fn nothing_seen_before_a_crash_is_lost_or_renumbered() {
    // A crash lands between a flush's start and its end only sometimes: several rounds.
    for round in 0..5 {
        crash_while_watched(round);
    }
}

fn crash_while_watched(round: u32) {
    let dir = std::env::temp_dir().join(format!("skiff-crash-seen-{round}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_skiff-store-bench"))
        .arg("crash-writers")
        .arg(&dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen: Vec<(String, i64, String)> = Vec::new();
    for _ in 0..4000 {
        let l = lines.next().unwrap().unwrap();
        let mut f = l.split(' ');
        let (what, rev, key) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        seen.push((what.to_string(), rev.parse().unwrap(), key.to_string()));
    }
    // Writers and the watcher are mid-stream: kill now.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    let s = Store::open(&dir).unwrap();
    let watched = seen.iter().filter(|(w, ..)| w == "W").count();
    assert!(watched > 100, "the watcher saw {watched} events");
    for (what, rev, key) in &seen {
        let kv = s
            .get(key)
            .unwrap()
            .unwrap_or_else(|| panic!("{what} {rev} {key}: lost after the crash"));
        assert_eq!(kv.mod_revision, *rev, "{what} {key}: revision changed");
    }
    // New writes get revisions no one has seen.
    let top = seen.iter().map(|(_, r, _)| *r).max().unwrap();
    let next = s
        .put(
            "/k/after",
            b"x".to_vec(),
            skiff_control::store::Precondition::None,
        )
        .unwrap();
    assert!(next.mod_revision > top);
    drop(s);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_torn_wal_tail_is_cut_and_the_store_goes_on() {
    use std::io::Write;
    let dir = std::env::temp_dir().join(format!("skiff-crash-torn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let s = Store::open(&dir).unwrap();
    for i in 0..10u8 {
        s.put(
            &format!("/k/{i}"),
            vec![i],
            skiff_control::store::Precondition::None,
        )
        .unwrap();
    }
    drop(s);
    // A crash in the middle of an append: half a record's frame.
    let wal = dir.join("wal");
    let intact = std::fs::metadata(&wal).unwrap().len();
    let mut f = std::fs::OpenOptions::new().append(true).open(&wal).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9]).unwrap();
    drop(f);
    // The warning goes to the log: run the opening in a child with its log on stderr.
    let o = Command::new(env!("CARGO_BIN_EXE_skiff-store-bench"))
        .arg("open")
        .arg(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{o:?}");
    assert!(err.contains("WAL tail torn"), "{err}");
    assert!(err.contains(&format!("offset={intact}")), "{err}");
    assert!(err.contains("cut_bytes=10"), "{err}");
    assert_eq!(
        std::fs::metadata(&wal).unwrap().len(),
        intact,
        "cut back to the intact records"
    );
    let s = Store::open(&dir).unwrap();
    assert_eq!(s.revision().unwrap(), 10);
    assert_eq!(s.list("/k/").unwrap().0.len(), 10);
    let next = s
        .put(
            "/k/next",
            vec![1],
            skiff_control::store::Precondition::Absent,
        )
        .unwrap();
    assert_eq!(next.mod_revision, 11);
    drop(s);
    std::fs::remove_dir_all(&dir).unwrap();
}
