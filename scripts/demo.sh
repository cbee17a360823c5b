#!/usr/bin/env bash
# Demo (as root): the control plane running a Deployment, driven by the real kubectl, and
# a real container run by skiff-runtime.
#  1. skiff-control (API server + embedded store + scheduler + controllers) on loopback,
#     over HTTPS with its own CA; kubectl uses the admin kubeconfig it prints. Two Node
#     objects stand in for workers until the kubelet lands; kubectl applies a Deployment
#     and its pods are created and scheduled.
#  2. The CRI server (skiff-runtime serve) runs a busybox pod, driven by skiffctl.
#  3. skiff-runtime runs a busybox container from an OCI bundle, as runc would.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -p skiff-runtime -p skiff-control
rt=target/release/skiff-runtime
work=$(mktemp -d /tmp/skiff-demo.XXXXXX)
cp_pid="" cri_pid=""
cleanup() {
  [ -n "$cri_pid" ] && { target/release/skiffctl -r "unix://$work/cri.sock" rmp -f -a >/dev/null 2>&1 || true; kill "$cri_pid" 2>/dev/null || true; }
  [ -n "$cp_pid" ] && kill "$cp_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

echo "== control plane"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 18080)
target/release/skiff-control --data-dir "$work/control" --bind-address 127.0.0.1 --secure-port "$port" 2>"$work/control.log" &
cp_pid=$!
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
target/release/skiff-control --data-dir "$work/control" kubeconfig --server "https://127.0.0.1:$port" > "$work/kubeconfig"
if command -v kubectl >/dev/null; then
  k() { kubectl --kubeconfig "$work/kubeconfig" "$@"; }
  for n in 1 2; do
    printf 'apiVersion: v1\nkind: Node\nmetadata:\n  name: node-%s\nstatus:\n  allocatable: {cpu: "4", memory: 8Gi, pods: "110"}\n  conditions: [{type: Ready, status: "True"}]\n' "$n" | k apply -f -
  done
  cat <<'YAML' | k apply -f -
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: docker.io/skiff/busybox:latest
        resources:
          requests: {cpu: 500m, memory: 128Mi}
YAML
  sleep 2
  k get deployments,replicasets
  k get pods -o custom-columns=NAME:.metadata.name,NODE:.spec.nodeName,PHASE:.status.phase
else
  echo "kubectl is not installed: skipping the control plane part"
fi

echo "== CRI: a pod through skiff-runtime serve and skiffctl"
target/release/skiff-runtime --root "$work/cri" serve --listen "$work/cri.sock" --image-dir "$work/images" \
  --cni-conf-dir "$work/no-cni" 2>"$work/cri.log" &
cri_pid=$!
ctl() { target/release/skiffctl -r "unix://$work/cri.sock" "$@"; }
./scripts/images/busybox-oci.sh "$work/busybox.tar" >/dev/null
for _ in $(seq 50); do [ -S "$work/cri.sock" ] && break; sleep 0.1; done
ctl import "$work/busybox.tar" --image-dir "$work/images"
cat > "$work/pod.yaml" <<YAML
metadata: {name: demo, namespace: default, uid: demo-1}
hostname: demo
log_directory: $work/logs
YAML
cat > "$work/container.yaml" <<'YAML'
metadata: {name: hello}
image: {image: docker.io/skiff/busybox:latest}
command: [sh, -c, 'echo hello from pod $(hostname); sleep 300']
log_path: hello.log
YAML
pod=$(ctl runp "$work/pod.yaml")
cid=$(ctl create "$pod" "$work/container.yaml" "$work/pod.yaml")
ctl start "$cid" >/dev/null
sleep 0.3
ctl pods
ctl ps
ctl logs "$cid"
ctl exec "$cid" ps
ctl rmp -f "$pod"

echo "== container runtime (an OCI bundle, runc-style)"
bundle=$work/bundle
mkdir -p "$bundle/rootfs/bin" "$bundle/rootfs/proc" "$bundle/rootfs/sys" "$bundle/rootfs/dev" "$bundle/rootfs/etc"
cp "$(command -v busybox)" "$bundle/rootfs/bin/busybox"
for a in $("$bundle/rootfs/bin/busybox" --list); do
  [ "$a" = busybox ] || ln -s busybox "$bundle/rootfs/bin/$a"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$bundle/rootfs/etc/passwd"
"$rt" spec --bundle "$bundle"
# Not interactive: no terminal, and a command that shows the container's view of itself.
sed -i 's/"terminal": true/"terminal": false/' "$bundle/config.json"
sed -i 's|"sh"$|"sh", "-c", "echo hello from $(hostname), pid $$; id; grep -E \\"CapEff\|NoNewPrivs\\" /proc/self/status; ls /"|' "$bundle/config.json"
"$rt" --root "$work/state" run --bundle "$bundle" "demo-$$"
