#!/usr/bin/env bash
# The VM cluster under TCG (as root): boot to every worker Ready, then a Deployment of N
# pods applied with kubectl, each pod's time from creation to Running as a watch sees it
# (Kubernetes' pod startup SLI: images already on the node, so no pull is counted; the SLO
# is p99 <= 5 s). Three VMs (the control plane on node-1, two workers), release binaries.
#   N=30 ./scripts/bench-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-30}
./scripts/setup.sh >/dev/null
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -q --workspace --bins
vm=target/release/skiff-vm
name=skiff-bench
mkdir -p target/vm-images
LAYER_GZIP=1 ./scripts/images/busybox-oci.sh target/vm-images/busybox.tar >/dev/null
work=$(mktemp -d /tmp/skiff-bench-cluster.XXXXXX)
watcher=""
cleanup() { [ -n "$watcher" ] && kill "$watcher" 2>/dev/null; "$vm" down --name "$name" || true; rm -rf "$work"; }
trap cleanup EXIT
"$vm" down --name "$name" >/dev/null 2>&1 || true
now() { date +%s%N; }

t0=$(now)
"$vm" --name "$name" up --nodes 3 --memory 768 --kubernetes --bin-dir target/release \
  --image target/vm-images/busybox.tar
"$vm" --name "$name" kubeconfig > "$work/kubeconfig"
k() { kubectl --kubeconfig "$work/kubeconfig" "$@"; }
for _ in $(seq 600); do
  [ "$(k get nodes --no-headers 2>/dev/null | grep -c ' Ready ')" = 2 ] && break
  sleep 0.2
done
[ "$(k get nodes --no-headers | grep -c ' Ready ')" = 2 ] || { echo "workers not Ready" >&2; exit 1; }
t_ready=$(now)

# Every watch event stamped on arrival: ADDED is the pod's creation, the first event
# with phase Running its start.
k get pods -l app=bench -w --output-watch-events \
  -o jsonpath='{.type} {.object.metadata.name} {.object.status.phase}{"\n"}' 2>/dev/null |
  while read -r type pod phase; do echo "$(now) $type $pod $phase"; done > "$work/events" &
watcher=$!
sleep 1
k apply -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: bench}
spec:
  replicas: $N
  selector: {matchLabels: {app: bench}}
  template:
    metadata: {labels: {app: bench}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: docker.io/skiff/busybox:latest
        imagePullPolicy: IfNotPresent
        command: [sleep, "3600"]
YAML
for _ in $(seq 1200); do
  running=$(awk '$4 == "Running" {print $3}' "$work/events" | sort -u | wc -l)
  [ "$running" -ge "$N" ] && break
  sleep 0.25
done
awk '$2 == "ADDED" && !($3 in a) {a[$3] = $1}
     $4 == "Running" && !($3 in r) {r[$3] = $1}
     END {for (p in r) if (p in a) printf "%.3f\n", (r[p] - a[p]) / 1e9}' "$work/events" |
  sort -n > "$work/lat"
n=$(wc -l < "$work/lat")
pct() { awk -v q="$1" '{v[NR] = $1} END {i = int(q * NR + 0.999); if (i < 1) i = 1; print v[i]}' "$work/lat"; }
echo
accel=$(sed -n 's/.*"accel": "\([a-z]*\)".*/\1/p' "/run/skiff-vm/$name/state.json")
echo "VM cluster under $accel, 3 VMs of 1 vCPU:"
awk -v a="$t0" -v b="$t_ready" 'BEGIN {printf "  boot to both workers Ready: %.1f s\n", (b - a) / 1e9}' 
echo "  Deployment of $N: $n pods Running; creation to Running p50 $(pct 0.5) s, p99 $(pct 0.99) s, max $(tail -1 "$work/lat") s"
