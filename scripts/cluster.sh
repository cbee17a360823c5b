#!/usr/bin/env bash
# The main job (as root): a three-node Skiff cluster in QEMU VMs, formed as a person forms
# one (skiff-vm up --kubernetes: the control plane on node-1, node-2 and node-3 joined
# with a bootstrap token; host-gw pod network, cluster DNS on every node), then the seed's
# two examples driven by this machine's kubectl:
#  1. a shell pod, Running with its own IP and hostname;
#  2. a web Deployment of 3 behind a Service, spread over both workers, reached by
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
mkdir -p target/vm-images
LAYER_GZIP=1 ./scripts/images/busybox-oci.sh target/vm-images/busybox.tar >/dev/null
"$vm" down --name "$name" >/dev/null 2>&1 || true
[ "${KEEP:-1}" = 0 ] && trap '"$vm" down --name "$name" || true' EXIT
"$vm" --name "$name" up --nodes 3 --memory 768 --kubernetes --image target/vm-images/busybox.tar
"$vm" --name "$name" kubeconfig > target/vm-kubeconfig
k() { kubectl --kubeconfig target/vm-kubeconfig "$@"; }
until [ "$(k get nodes --no-headers 2>/dev/null | grep -c ' Ready ')" = 2 ]; do sleep 1; done
k get nodes -o wide
echo "== a shell pod"
k run shell --image docker.io/skiff/busybox:latest --image-pull-policy IfNotPresent --restart Never -- sh -c 'sleep 3600'
k wait --for=condition=Ready pod/shell --timeout=180s
k exec shell -- sh -c 'echo "hostname: $(hostname)"; ip -4 -o addr show eth0'
echo "== web x3 behind a Service"
k apply -f - <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: docker.io/skiff/busybox:latest
        imagePullPolicy: IfNotPresent
        command: [sh, -c, 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www']
        ports: [{containerPort: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 80}]
YAML
k rollout status deployment/web --timeout=240s
k get pods -o wide
ip=$(k get service web -o jsonpath='{.spec.clusterIP}')
for target in "$ip" web web.default.svc.cluster.local; do
  echo "== from the shell pod to http://$target/ (six requests)"
  k exec shell -- sh -c "for i in 1 2 3 4 5 6; do timeout 5 wget -qO- http://$target/; done" | sort | uniq -c
done
echo "cluster up: kubectl --kubeconfig target/vm-kubeconfig get pods -A"
