//! batch/v1 Job with the real kubectl (1.27 and 1.33): `kubectl create job`, defaults and
//! the generated selector, pods up to parallelism until completions succeed, `kubectl
//! wait --for=condition=complete`, the backoff limit failing a Job (`--for=condition=
//! failed`), what `kubectl get jobs` shows, validation and immutability. Pod phases are
//! set through the status subresource, as a kubelet reports them.

mod common;
use skiff_fixtures::process::Control;
use std::process::Output;
use std::time::{Duration, Instant};

const KUBECTLS: [&str; 2] = [
    "/usr/lib/google-cloud-sdk/bin/kubectl.1.27",
    "/usr/lib/google-cloud-sdk/bin/kubectl.1.33",
];

struct K<'a> {
    bin: &'a str,
    kc: String,
}

impl K<'_> {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut c = std::process::Command::new(self.bin);
        c.arg("--kubeconfig").arg(&self.kc).args(args);
        c.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        if let Some(s) = stdin {
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args, None);
        assert!(o.status.success(), "kubectl {args:?}: {o:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn eventually(&self, args: &[&str], what: &str, f: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let out = String::from_utf8_lossy(&self.run(args, None).stdout).into_owned();
            if f(&out) {
                return out;
            }
            assert!(Instant::now() < end, "timed out waiting for {what}:\n{out}");
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// The job's live (not finished) pods, by name.
    fn active(&self, job: &str) -> Vec<String> {
        let out = self.ok(&[
            "get",
            "pods",
            "-l",
            &format!("job-name={job}"),
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.phase}{\"\\n\"}{end}",
        ]);
        out.lines()
            .filter(|l| !l.ends_with("Succeeded") && !l.ends_with("Failed"))
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect()
    }

    /// A pod ends as its kubelet would report it.
    fn finish(&self, pod: &str, phase: &str) {
        self.ok(&[
            "patch",
            "pod",
            pod,
            "--subresource=status",
            "--type=merge",
            "-p",
            &format!(r#"{{"status":{{"phase":"{phase}"}}}}"#),
        ]);
    }
}

#[test]
#[ignore = "needs kubectl 1.27 and 1.33"]
fn jobs_run_to_completion_or_fail_at_the_backoff_limit() {
    for (i, bin) in KUBECTLS.iter().enumerate() {
        assert!(std::path::Path::new(bin).exists(), "needs {bin}");
        let dir = std::env::temp_dir().join(format!("skiff-jobs-{i}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cp = Control::start(&dir, &[]);
        let k = K {
            bin,
            kc: cp.kubeconfig("admin.kubeconfig").display().to_string(),
        };
        // kubectl create job: defaults, the generated selector and labels, one pod.
        k.ok(&[
            "create",
            "job",
            "hello",
            "--image=busybox",
            "--",
            "echo",
            "hi",
        ]);
        let spec = k.ok(&["get", "job", "hello", "-o", "jsonpath={.spec.completions} {.spec.parallelism} {.spec.backoffLimit} {.spec.selector.matchLabels}"]);
        let uid = k.ok(&["get", "job", "hello", "-o", "jsonpath={.metadata.uid}"]);
        assert!(spec.starts_with("1 1 6 "), "{spec}");
        assert!(spec.contains(&uid), "selector by controller-uid: {spec}");
        let pods = k.eventually(
            &["get", "pods", "-l", "job-name=hello", "-o", "name"],
            "hello's pod",
            |o| o.lines().count() == 1,
        );
        let pod = pods.trim().trim_start_matches("pod/").to_string();
        k.finish(&pod, "Succeeded");
        let o = k.run(
            &[
                "wait",
                "--for=condition=complete",
                "job/hello",
                "--timeout=20s",
            ],
            None,
        );
        assert!(o.status.success(), "{o:?}");
        let table = k.ok(&["get", "jobs"]);
        let line = table.lines().find(|l| l.starts_with("hello")).unwrap();
        let cols: Vec<&str> = line.split_whitespace().collect();
        if bin.ends_with("1.33") {
            // NAME STATUS COMPLETIONS DURATION AGE
            assert_eq!(&cols[1..3], ["Complete", "1/1"], "{table}");
        } else {
            assert_eq!(cols[cols.len() - 3], "1/1", "{table}");
        }

        // completions 3, parallelism 2: two at a time until three succeeded.
        let o = k.run(
            &["apply", "-f", "-"],
            Some("apiVersion: batch/v1\nkind: Job\nmetadata: {name: three}\nspec:\n  completions: 3\n  parallelism: 2\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: busybox}]\n"),
        );
        assert!(o.status.success(), "{o:?}");
        let wait_active = |n: usize| {
            let end = Instant::now() + Duration::from_secs(20);
            loop {
                let a = k.active("three");
                if a.len() == n {
                    return a;
                }
                assert!(Instant::now() < end, "three: {a:?}, wanted {n} active");
                std::thread::sleep(Duration::from_millis(150));
            }
        };
        let first = wait_active(2);
        k.finish(&first[0], "Succeeded");
        let second = wait_active(2);
        assert!(second.contains(&first[1]) && !second.contains(&first[0]));
        for p in second {
            k.finish(&p, "Succeeded");
        }
        let o = k.run(
            &[
                "wait",
                "--for=condition=complete",
                "job/three",
                "--timeout=20s",
            ],
            None,
        );
        assert!(o.status.success(), "{o:?}");
        let st = k.ok(&[
            "get",
            "job",
            "three",
            "-o",
            "jsonpath={.status.succeeded} {.status.active} {.status.completionTime}",
        ]);
        assert!(st.starts_with("3  "), "3 succeeded, none active: {st}");
        assert!(k.active("three").is_empty());

        // backoffLimit 1: the second failure fails the Job, with kube's reason and event.
        let o = k.run(
            &["apply", "-f", "-"],
            Some("apiVersion: batch/v1\nkind: Job\nmetadata: {name: flaky}\nspec:\n  backoffLimit: 1\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: busybox}]\n"),
        );
        assert!(o.status.success(), "{o:?}");
        let p1 = wait_for_one(&k, "flaky", None);
        k.finish(&p1, "Failed");
        let p2 = wait_for_one(&k, "flaky", Some(&p1));
        k.finish(&p2, "Failed");
        let o = k.run(
            &[
                "wait",
                "--for=condition=failed",
                "job/flaky",
                "--timeout=20s",
            ],
            None,
        );
        assert!(o.status.success(), "{o:?}");
        let reason = k.ok(&[
            "get",
            "job",
            "flaky",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason}",
        ]);
        assert_eq!(reason, "BackoffLimitExceeded");
        let events = k.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=flaky",
            "-o",
            "jsonpath={range .items[*]}{.reason} {end}",
        ]);
        assert!(
            events.contains("SuccessfulCreate") && events.contains("BackoffLimitExceeded"),
            "{events}"
        );
        assert!(k.active("flaky").is_empty());

        // Validation and immutability, as kube-apiserver answers them.
        let o = k.run(
            &["apply", "-f", "-"],
            Some("apiVersion: batch/v1\nkind: Job\nmetadata: {name: bad}\nspec:\n  template:\n    spec:\n      restartPolicy: Always\n      containers: [{name: c, image: busybox}]\n"),
        );
        assert!(!o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("restartPolicy"),
            "{o:?}"
        );
        let o = k.run(
            &[
                "patch",
                "job",
                "three",
                "--type=merge",
                "-p",
                r#"{"spec":{"completions":5}}"#,
            ],
            None,
        );
        assert!(!o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("field is immutable"),
            "{o:?}"
        );
        // Deleting a Job takes its pods (background cascade).
        k.ok(&["delete", "job", "three"]);
        k.eventually(
            &["get", "pods", "-l", "job-name=three", "-o", "name"],
            "three's pods gone",
            |o| o.trim().is_empty(),
        );
    }
}

/// The job's one live pod (not `not`), once there is exactly one.
fn wait_for_one(k: &K, job: &str, not: Option<&str>) -> String {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let a = k.active(job);
        if a.len() == 1 && Some(a[0].as_str()) != not {
            return a[0].clone();
        }
        assert!(Instant::now() < end, "{job}: {a:?}");
        std::thread::sleep(Duration::from_millis(150));
    }
}

/// CronJob: `kubectl create cronjob` (both kubectl versions), the columns, `kubectl
/// create job --from=cronjob/…`, a Job started at the next minute named after it with
/// the CronJob's status following, suspend, and a bad schedule refused.
#[test]
#[ignore = "needs kubectl 1.27 and 1.33"]
fn cronjobs_start_jobs_on_schedule() {
    let dir = std::env::temp_dir().join(format!("skiff-cron-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cp = Control::start(&dir, &[]);
    let kc = cp.kubeconfig("admin.kubeconfig").display().to_string();
    let old = K {
        bin: KUBECTLS[0],
        kc: kc.clone(),
    };
    old.ok(&[
        "create",
        "cronjob",
        "nightly",
        "--image=busybox",
        "--schedule=0 3 * * *",
        "--",
        "echo",
        "hi",
    ]);
    let k = K {
        bin: KUBECTLS[1],
        kc,
    };
    k.ok(&[
        "create",
        "cronjob",
        "tick",
        "--image=busybox",
        "--schedule=* * * * *",
        "--",
        "echo",
        "hi",
    ]);
    let table = k.ok(&["get", "cronjobs"]);
    let line = table.lines().find(|l| l.starts_with("nightly")).unwrap();
    assert!(
        line.contains("0 3 * * *") && line.contains("False") && line.contains("<none>"),
        "{table}"
    );
    // By hand, from the template: owned by the CronJob, marked manual.
    k.ok(&["create", "job", "by-hand", "--from=cronjob/tick"]);
    let j = k.ok(&["get", "job", "by-hand", "-o", "jsonpath={.metadata.ownerReferences[0].kind} {.metadata.annotations.cronjob\\.kubernetes\\.io/instantiate}"]);
    assert_eq!(j, "CronJob manual");
    // On schedule: at the next minute, a Job named after it, in the CronJob's status.
    let end = Instant::now() + Duration::from_secs(75);
    let scheduled = loop {
        let names = k.ok(&[
            "get",
            "jobs",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}",
        ]);
        if let Some(n) = names.lines().find(|n| n.starts_with("tick-")) {
            break n.to_string();
        }
        assert!(Instant::now() < end, "no scheduled job: {names}");
        std::thread::sleep(Duration::from_millis(500));
    };
    let minutes: i64 = scheduled.trim_start_matches("tick-").parse().unwrap();
    let st = k.eventually(
        &[
            "get",
            "cronjob",
            "tick",
            "-o",
            "jsonpath={.status.lastScheduleTime} {.status.active[*].name}",
        ],
        "status",
        |o| o.contains(&scheduled),
    );
    let at = st.split_whitespace().next().unwrap();
    assert!(at.ends_with(":00Z"), "scheduled on the minute: {at}");
    let ann = k.ok(&[
        "get",
        "job",
        &scheduled,
        "-o",
        "jsonpath={.metadata.annotations.batch\\.kubernetes\\.io/cronjob-scheduled-timestamp}",
    ]);
    assert_eq!(ann, at);
    assert!(minutes * 60 > 1_700_000_000, "{minutes}");
    // Suspended: no more; a bad schedule or time zone is refused.
    k.ok(&[
        "patch",
        "cronjob",
        "tick",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":true}}"#,
    ]);
    let o = k.run(
        &[
            "create",
            "cronjob",
            "bad",
            "--image=busybox",
            "--schedule=61 * * * *",
        ],
        None,
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("spec.schedule"),
        "{o:?}"
    );
    let o = k.run(
        &[
            "patch",
            "cronjob",
            "nightly",
            "--type=merge",
            "-p",
            r#"{"spec":{"timeZone":"Mars/Olympus"}}"#,
        ],
        None,
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("spec.timeZone"),
        "{o:?}"
    );
}
