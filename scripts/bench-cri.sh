#!/usr/bin/env bash
# CRI pod start/teardown latency and daemon memory: skiff-runtime serve vs containerd 1.6
# (its CRI plugin, runc) from apt, side by side on this machine, both on private roots and
# sockets under a temp dir. Pods use the host network (no CNI on either side), so the
# figures compare the runtimes, not the network plugins. Run as root.
#   N=20 PODS=50 ./scripts/bench-cri.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20}
PODS=${PODS:-50}
./scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -q -p skiff-runtime
bin=$PWD/target/release

work=$(mktemp -d /tmp/skiff-cri-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  # containerd leaves its shims and mounts behind when it is killed; clean them up.
  pkill -f "containerd-shim-runc-v2 -namespace k8s.io -address $work" 2>/dev/null || true
  grep " $work" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work" /tmp/skiff-cri-bench-logs
}
trap cleanup EXIT

# Images: busybox, and a "pause" image for containerd's sandboxes (no registry here).
./scripts/images/busybox-oci.sh "$work/busybox.tar" docker.io/skiff/busybox:latest >/dev/null
IMAGE_CMD='["sleep","2147483647"]' ./scripts/images/busybox-oci.sh "$work/pause.tar" docker.io/skiff/pause:bench >/dev/null

# skiff
"$bin/skiff-runtime" --root "$work/skiff" serve --listen "$work/skiff.sock" \
  --image-dir "$work/skiff-images" --cni-conf-dir "$work/no-cni" >"$work/skiff.log" 2>&1 &
pids+=($!); skiff_pid=$!
"$bin/skiffctl" import "$work/busybox.tar" --image-dir "$work/skiff-images" >/dev/null

# containerd with its CRI plugin
mkdir -p "$work/cni"
cat > "$work/containerd.toml" <<EOF
version = 2
root = "$work/containerd-root"
state = "$work/containerd-state"
[grpc]
  address = "$work/containerd.sock"
[ttrpc]
  address = "$work/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/skiff/pause:bench"
  # Sandboxes ask oom_score_adj -998; without CAP_SYS_RESOURCE (as here) that fails.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$work/cni"
EOF
containerd --config "$work/containerd.toml" >"$work/containerd.log" 2>&1 &
pids+=($!); containerd_pid=$!
for _ in $(seq 50); do [ -S "$work/containerd.sock" ] && [ -S "$work/skiff.sock" ] && break; sleep 0.1; done
for t in busybox pause; do
  ctr -a "$work/containerd.sock" -n k8s.io images import "$work/$t.tar" >/dev/null
done

"$bin/skiff-cri-bench" -n "$N" --pods "$PODS" \
  --runtime "skiff=$work/skiff.sock,$skiff_pid,skiff-runtime --root $work/skiff shim|skiff-runtime pod-pause" \
  --runtime "containerd=$work/containerd.sock,$containerd_pid,-address $work/containerd.sock|sleep 2147483647"
