#!/usr/bin/env bash
# The main job (as root): a three-node Skiff cluster in QEMU VMs, formed as a person forms
# one (skiff-vm up --kubernetes: the control plane on node-1, node-2 and node-3 joined
# with a bootstrap token; host-gw pod network, cluster DNS on every node, a registry on
# node-1 mirroring docker.io with busybox and nginx built here), then the seed's two
# examples driven by this machine's kubectl, images named as people type them:
#  1. a shell pod (busybox), Running with its own IP and hostname;
#  2. an nginx Deployment of 3 behind a Service, spread over both workers, reached by
#     ClusterIP and by DNS name from the shell pod on one of them.
# The cluster stays up (KEEP=0 to take it down at the end): kubectl --kubeconfig
# target/vm-kubeconfig …, `target/debug/skiff-vm --name skiff exec node-2 -- sh`,
# `target/debug/skiff-vm down --name skiff`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --workspace --bins
vm=target/debug/skiff-vm
name=skiff
# busybox and nginx, pushed at `up` to node-1's registry (docker.io's mirror for every node).
mirror=()
while read -r m; do mirror+=(--mirror-image "$m"); done < <(./scripts/images/cluster-images.sh target/vm-images)
"$vm" down --name "$name" >/dev/null 2>&1 || true
[ "${KEEP:-1}" = 0 ] && trap '"$vm" down --name "$name" || true' EXIT
"$vm" --name "$name" up --nodes 3 --memory 768 --kubernetes "${mirror[@]}"
"$vm" --name "$name" kubeconfig > target/vm-kubeconfig
k() { kubectl --kubeconfig target/vm-kubeconfig "$@"; }
until [ "$(k get nodes --no-headers 2>/dev/null | grep -c ' Ready ')" = 2 ]; do sleep 1; done
k get nodes -o wide
echo "== a shell pod"
k run shell --image busybox --restart Never -- sh -c 'sleep 3600'
k wait --for=condition=Ready pod/shell --timeout=180s
k exec shell -- sh -c 'echo "hostname: $(hostname)"; ip -4 -o addr show eth0'
echo "== nginx x3 behind a Service"
k apply -f - <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: nginx}
spec:
  replicas: 3
  selector: {matchLabels: {app: nginx}}
  template:
    metadata: {labels: {app: nginx}}
    spec:
      containers:
      - name: nginx
        image: nginx
        ports: [{containerPort: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: nginx}
spec:
  selector: {app: nginx}
  ports: [{port: 80, targetPort: 80}]
YAML
k rollout status deployment/nginx --timeout=240s
k get pods -o wide
ip=$(k get service nginx -o jsonpath='{.spec.clusterIP}')
for target in "$ip" nginx nginx.default.svc.cluster.local; do
  echo "== from the shell pod to http://$target/"
  k exec shell -- sh -c "timeout 5 wget -qO- http://$target/"
done
echo "cluster up: kubectl --kubeconfig target/vm-kubeconfig get pods -A"
