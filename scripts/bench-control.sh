#!/usr/bin/env bash
# Control-plane benchmarks: the embedded store (writes/s, watch latency), the scheduler
# (pods/s at 100 and 1,000 simulated nodes) and `kubectl apply` of 100 objects end to end
# against skiff-control over HTTPS (create, re-apply unchanged, delete). Run as root.
#   N=100 ./scripts/bench-control.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100}
./scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -q -p skiff-control
bin=$PWD/target/release
work=$(mktemp -d /tmp/skiff-bench-control.XXXXXX)
cp_pid=""
cleanup() { [ -n "$cp_pid" ] && kill "$cp_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

echo "== store: embedded, then etcd 3.4 (one member on loopback) side by side"
"$bin/skiff-store-bench" bench "$work/store"
if command -v etcd >/dev/null; then
  cport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  pport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  etcd --name bench --data-dir "$work/etcd" --listen-client-urls "http://127.0.0.1:$cport" \
    --advertise-client-urls "http://127.0.0.1:$cport" --listen-peer-urls "http://127.0.0.1:$pport" \
    --initial-advertise-peer-urls "http://127.0.0.1:$pport" --initial-cluster "bench=http://127.0.0.1:$pport" \
    >"$work/etcd.log" 2>&1 &
  etcd_pid=$!
  sleep 2
  "$bin/skiff-store-bench" bench-etcd "http://127.0.0.1:$cport"
  kill "$etcd_pid"
fi
echo "== scheduler"
"$bin/skiff-sched-bench"

echo "== kubectl apply of $N objects (skiff-control, HTTPS)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin/skiff-control" --data-dir "$work/control" --secure-port "$port" 2>"$work/control.log" &
cp_pid=$!
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
"$bin/skiff-control" --data-dir "$work/control" kubeconfig --server "https://127.0.0.1:$port" > "$work/kubeconfig"
k() { kubectl --kubeconfig "$work/kubeconfig" "$@"; }
manifest=$work/objects.yaml
: > "$manifest"
for i in $(seq 1 "$N"); do
  if [ $((i % 2)) = 0 ]; then
    printf -- '---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-%s\n  labels: {bench: "yes"}\ndata: {key: "value-%s"}\n' "$i" "$i" >> "$manifest"
  else
    printf -- '---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app-%s\n  labels: {bench: "yes"}\nspec:\n  replicas: 0\n  selector:\n    matchLabels: {app: app-%s}\n  template:\n    metadata:\n      labels: {app: app-%s}\n    spec:\n      containers:\n      - {name: c, image: "busybox:%s"}\n' "$i" "$i" "$i" "$i" >> "$manifest"
  fi
done
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
t=$(date +%s%N); k apply -f "$manifest" >/dev/null; create=$(ms "$t")
t=$(date +%s%N); k apply -f "$manifest" >/dev/null; again=$(ms "$t")
t=$(date +%s%N); k delete -f "$manifest" --wait=false >/dev/null; del=$(ms "$t")
printf '%-34s %8s ms\n' "apply (create $N objects)" "$create" "apply again (unchanged)" "$again" "delete $N objects" "$del"
