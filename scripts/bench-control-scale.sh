#!/usr/bin/env bash
# The control plane at scale (issue 11's benchmark): NODES Ready nodes registered
# through the API, then PODS pods; pods/s from the first create until every pod is
# bound, the API server's idle CPU and RSS at that size, and `kubectl get pods -A`.
#   NODES=5000 PODS=10000 ./scripts/bench-control-scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${NODES:-5000}
PODS=${PODS:-10000}
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -q -p skiff-control
bin=$PWD/target/release
work=$(mktemp -d /tmp/skiff-bench-scale.XXXXXX)
cp_pid=""
cleanup() { [ -n "$cp_pid" ] && kill "$cp_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sport=$(free); pport=$(free)
# Nodes without kubelets: a long grace period keeps them Ready for the run; a /8
# cluster CIDR has a /24 for each of them (a /16 holds 256).
"$bin/skiff-control" --data-dir "$work/control" --secure-port "$sport" --insecure-port "$pport" \
  --node-monitor-grace-period 1h --cluster-cidr 10.0.0.0/8 2>"$work/control.log" &
cp_pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$pport") 2>/dev/null && break; sleep 0.1; done
SKIFF_PID=$cp_pid "$bin/skiff-scale-bench" "$pport" "$NODES" "$PODS"
"$bin/skiff-control" --data-dir "$work/control" kubeconfig --server "https://127.0.0.1:$sport" > "$work/kubeconfig"
for i in 1 2 3; do
  s=$(date +%s.%N)
  n=$(kubectl --kubeconfig "$work/kubeconfig" get pods -A --no-headers | wc -l)
  e=$(date +%s.%N)
  echo "kubectl get pods -A: $n pods in $(python3 -c "print(round($e - $s, 2))") s"
done
