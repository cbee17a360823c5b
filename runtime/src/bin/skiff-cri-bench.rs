//! Pod start and teardown latency, and daemon memory, of CRI runtimes side by side.
//!   skiff-cri-bench --runtime NAME=SOCKET[,PID[,HELPER-PATTERN]] ... -n 20 --image IMG
//! Each round starts one pod (RunPodSandbox + CreateContainer + StartContainer of a
//! busybox sleep, host network) on every runtime in turn, then tears them down
//! (StopPodSandbox + RemovePodSandbox), so machine noise hits all alike. Then the RSS
//! of each daemon (and of its per-pod helper processes) with 0 and with --pods pods.

use anyhow::{anyhow, Context, Result};
use clap::Parser;
use skiff_runtime::cri::client;
use skiff_runtime::cri::v1;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// NAME=SOCKET[,DAEMON-PID[,HELPER-CMDLINE-SUBSTRING]] (repeatable).
    #[arg(long = "runtime", required = true)]
    runtimes: Vec<String>,
    #[arg(short, default_value_t = 20)]
    n: usize,
    #[arg(long, default_value = "docker.io/skiff/busybox:latest")]
    image: String,
    /// Pods held while memory is measured.
    #[arg(long, default_value_t = 50)]
    pods: usize,
}

struct Runtime {
    name: String,
    c: client::Clients,
    pid: Option<u32>,
    helper: Option<String>,
    start: Vec<Duration>,
    stop: Vec<Duration>,
}

fn pod_config(name: &str, i: usize) -> v1::PodSandboxConfig {
    v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: format!("bench-{i}"),
            uid: format!("bench-{name}-{i}-{}", std::process::id()),
            namespace: "bench".into(),
            attempt: 0,
        }),
        // Host-network pods keep the node's hostname (runc refuses one without a UTS ns).
        log_directory: format!("/tmp/skiff-cri-bench-logs/{name}"),
        linux: Some(v1::LinuxPodSandboxConfig {
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(v1::NamespaceOption {
                    network: v1::NamespaceMode::Node as i32,
                    pid: v1::NamespaceMode::Container as i32,
                    ipc: v1::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn start_pod(rt: &mut Runtime, image: &str, i: usize) -> Result<String> {
    let cfg = pod_config(&rt.name, i);
    let pod =
        rt.c.rt
            .run_pod_sandbox(v1::RunPodSandboxRequest {
                config: Some(cfg.clone()),
                runtime_handler: String::new(),
            })
            .await
            .with_context(|| format!("{}: RunPodSandbox", rt.name))?
            .into_inner()
            .pod_sandbox_id;
    let c = v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata {
            name: "sleep".into(),
            attempt: 0,
        }),
        image: Some(v1::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "3600".into()],
        log_path: format!("sleep-{i}.log"),
        linux: Some(v1::LinuxContainerConfig {
            security_context: Some(v1::LinuxContainerSecurityContext {
                namespace_options: cfg
                    .linux
                    .as_ref()
                    .and_then(|l| l.security_context.as_ref())
                    .and_then(|s| s.namespace_options.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id =
        rt.c.rt
            .create_container(v1::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(c),
                sandbox_config: Some(cfg),
            })
            .await
            .with_context(|| format!("{}: CreateContainer", rt.name))?
            .into_inner()
            .container_id;
    rt.c.rt
        .start_container(v1::StartContainerRequest { container_id: id })
        .await
        .with_context(|| format!("{}: StartContainer", rt.name))?;
    Ok(pod)
}

async fn remove_pod(rt: &mut Runtime, pod: &str) -> Result<()> {
    rt.c.rt
        .stop_pod_sandbox(v1::StopPodSandboxRequest {
            pod_sandbox_id: pod.into(),
        })
        .await
        .with_context(|| format!("{}: StopPodSandbox", rt.name))?;
    rt.c.rt
        .remove_pod_sandbox(v1::RemovePodSandboxRequest {
            pod_sandbox_id: pod.into(),
        })
        .await
        .with_context(|| format!("{}: RemovePodSandbox", rt.name))?;
    Ok(())
}

/// A field of /proc/PID/smaps_rollup in kB: Rss, or Pss (shared pages split among sharers).
fn mem_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(&format!("{field}:")))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kb(pid: u32) -> u64 {
    mem_kb(pid, "Rss")
}

/// PSS of processes whose command line contains one of the `|`-separated patterns,
/// and how many there are. PSS, not RSS: the helpers share their binary's pages.
fn helpers_kb(pattern: &str) -> (u64, usize) {
    let mut total = 0;
    let mut n = 0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue; // our own command line names the patterns
        }
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if pattern.split('|').any(|p| cmd.contains(p)) {
            total += mem_kb(pid, "Pss");
            n += 1;
        }
    }
    (total, n)
}

fn median(v: &mut [Duration]) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut rts = Vec::new();
    for spec in &args.runtimes {
        let (name, rest) = spec
            .split_once('=')
            .ok_or_else(|| anyhow!("--runtime {spec:?}: NAME=SOCKET[,PID[,PATTERN]]"))?;
        let mut parts = rest.splitn(3, ',');
        let sock = parts.next().unwrap_or_default();
        let pid = parts.next().and_then(|p| p.parse().ok());
        let helper = parts.next().map(str::to_string);
        let mut c = client::Clients::connect(sock, None, Duration::from_secs(120)).await?;
        let have = c
            .img
            .image_status(v1::ImageStatusRequest {
                image: Some(v1::ImageSpec {
                    image: args.image.clone(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await?
            .into_inner()
            .image
            .is_some();
        if !have {
            anyhow::bail!("{name}: image {} is not in its store", args.image);
        }
        rts.push(Runtime {
            name: name.into(),
            c,
            pid,
            helper,
            start: Vec::new(),
            stop: Vec::new(),
        });
    }
    // One warm-up pod each: first-use costs (layer unpack, caches) are not the steady state.
    for rt in rts.iter_mut() {
        let p = start_pod(rt, &args.image, 9999).await?;
        remove_pod(rt, &p).await?;
    }
    for i in 0..args.n {
        for rt in rts.iter_mut() {
            let t = Instant::now();
            let pod = start_pod(rt, &args.image, i).await?;
            rt.start.push(t.elapsed());
            let t = Instant::now();
            remove_pod(rt, &pod).await?;
            rt.stop.push(t.elapsed());
        }
    }
    println!("pod start (RunPodSandbox+CreateContainer+StartContainer) and teardown (StopPodSandbox+RemovePodSandbox), median of {} rounds:", args.n);
    let base = median(&mut rts[0].start.clone());
    let base_stop = median(&mut rts[0].stop.clone());
    println!(
        "{:<12} {:>12} {:>10} {:>14} {:>10}",
        "runtime", "start (ms)", "ratio", "teardown (ms)", "ratio"
    );
    for rt in rts.iter_mut() {
        let s = median(&mut rt.start);
        let t = median(&mut rt.stop);
        println!(
            "{:<12} {:>12.1} {:>10.2} {:>14.1} {:>10.2}",
            rt.name,
            s,
            s / base,
            t,
            t / base_stop
        );
    }
    println!("\nmemory (MiB): daemon RSS, and the PSS sum of per-pod helper processes (monitors, shims, pause)");
    println!(
        "{:<12} {:>10} {:>16} {:>18} {:>10}",
        "runtime",
        "0 pods",
        format!("{} pods daemon", args.pods),
        format!("{} pods helpers", args.pods),
        "helpers"
    );
    for rt in rts.iter_mut() {
        let idle = rt.pid.map_or(0, rss_kb);
        let mut pods = Vec::new();
        for i in 0..args.pods {
            pods.push(start_pod(rt, &args.image, 10_000 + i).await?);
        }
        let busy = rt.pid.map_or(0, rss_kb);
        let (h, n) = rt.helper.as_deref().map_or((0, 0), helpers_kb);
        for p in pods {
            remove_pod(rt, &p).await?;
        }
        println!(
            "{:<12} {:>10.1} {:>16.1} {:>18.1} {:>10}",
            rt.name,
            idle as f64 / 1024.0,
            busy as f64 / 1024.0,
            h as f64 / 1024.0,
            n
        );
    }
    Ok(())
}
