//! Store benchmark and crash helper.
//!   skiff-store-bench bench DIR         writes/s at 1, 16 and 64 concurrent writers, and
//!                                       watch delivery latency (put → event received)
//!   skiff-store-bench crash-writer DIR  write keys and print each acknowledged one,
//!                                       until killed (at most 200000), for the kill -9 test

use skiff_control::store::{Precondition, Store};
use std::io::Write;
use std::time::{Duration, Instant};

fn bench(dir: &str) {
    let value = vec![b'x'; 512]; // about a small Kubernetes object
    println!("embedded store, fsync per acknowledged write (group commit), 512-byte values");
    for writers in [1usize, 16, 64] {
        let path = format!("{dir}/w{writers}");
        let _ = std::fs::remove_dir_all(&path);
        let s = Store::open(&path).unwrap();
        let per = if writers == 1 { 2000 } else { 20_000 / writers };
        let start = Instant::now();
        let hs: Vec<_> = (0..writers)
            .map(|t| {
                let (s, v) = (s.clone(), value.clone());
                std::thread::spawn(move || {
                    for i in 0..per {
                        s.put(
                            &format!("/registry/pods/ns/p{t}-{i}"),
                            v.clone(),
                            Precondition::None,
                        )
                        .unwrap();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let n = writers * per;
        let secs = start.elapsed().as_secs_f64();
        println!(
            "  {writers:>3} writers: {n:>6} writes in {secs:.2}s = {:>8.0} writes/s",
            n as f64 / secs
        );
    }
    let path = format!("{dir}/watch");
    let _ = std::fs::remove_dir_all(&path);
    let s = Store::open(&path).unwrap();
    let w = s.watch("/registry/", 0).unwrap();
    let mut lat = Vec::new();
    for i in 0..1000 {
        let t = Instant::now();
        s.put(
            &format!("/registry/pods/ns/w{i}"),
            value.clone(),
            Precondition::None,
        )
        .unwrap();
        w.rx.recv_timeout(Duration::from_secs(5)).unwrap();
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "  watch: put+fsync → event, median {:?}, p99 {:?} (1000 events)",
        lat[500], lat[990]
    );
}

fn crash_writer(dir: &str) {
    let s = Store::open(dir).unwrap();
    let out = std::io::stdout();
    for i in 0..200_000u64 {
        s.put(
            &format!("/k/{i:08}"),
            i.to_le_bytes().to_vec(),
            Precondition::None,
        )
        .unwrap();
        let mut o = out.lock();
        writeln!(o, "{i}").unwrap();
        o.flush().unwrap();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("bench"), Some(dir)) => bench(dir),
        (Some("crash-writer"), Some(dir)) => crash_writer(dir),
        _ => {
            eprintln!("usage: skiff-store-bench bench DIR | crash-writer DIR");
            std::process::exit(2);
        }
    }
}
