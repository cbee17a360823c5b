#!/usr/bin/env bash
# Demo (as root): a one-node cluster running a Deployment, driven by the real kubectl.
#  1. skiff-control (API server + embedded store + scheduler + controllers) on loopback,
#     over HTTPS with its own CA; kubectl uses the admin kubeconfig it prints.
#  2. A worker: skiff-runtime's CRI server with skiff-cni in a network namespace of its own
#     (the pod network exists only there), skiff-kubelet registering node-1, skiff-proxy.
#  3. kubectl applies a Deployment of 3 busybox web servers: scheduled, started, their pod
#     IPs answer HTTP, and so does a NodePort Service through skiff-proxy; kubectl logs
#     and exec reach them; a deleted pod is stopped and replaced; scaling down removes pods.
#  4. The CRI server driven directly by skiffctl, and skiff-runtime running an OCI bundle
#     as runc would.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -p skiff-runtime -p skiff-control -p skiff-kubelet -p skiff-cni -p skiff-proxy -p kubectl-skiff
rt=target/release/skiff-runtime
work=$(mktemp -d /tmp/skiff-demo.XXXXXX)
netns=skiff-demo-$$
cp_pid="" cri_pid="" node_pid="" kubelet_pid="" proxy_pid=""
cleanup() {
  [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null
  [ -n "$kubelet_pid" ] && kill "$kubelet_pid" 2>/dev/null
  [ -n "$node_pid" ] && { target/release/skiffctl -r "unix://$work/node/cri.sock" rmp -f -a >/dev/null 2>&1 || true; kill "$node_pid" 2>/dev/null || true; }
  [ -n "$cri_pid" ] && { target/release/skiffctl -r "unix://$work/cri.sock" rmp -f -a >/dev/null 2>&1 || true; kill "$cri_pid" 2>/dev/null || true; }
  [ -n "$cp_pid" ] && kill "$cp_pid" 2>/dev/null
  ip netns del "$netns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
./scripts/images/busybox-oci.sh "$work/busybox.tar" >/dev/null

# The cluster's machine: a network namespace of its own, where the API server, the node's
# daemons, the pod network and the service rules live (nothing of it on the host's network).
ip netns add "$netns"
ip -n "$netns" link set lo up
on_node() { nsenter --net="/run/netns/$netns" "$@"; }
# Daemons: exec, so that $! is the daemon itself and the cleanup's kill reaches it.
on_node_daemon() { exec nsenter --net="/run/netns/$netns" "$@"; }
k() { on_node kubectl --kubeconfig "$work/kubeconfig" "$@"; }

echo "== control plane"
port=$(on_node python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 18080)
on_node_daemon target/release/skiff-control --data-dir "$work/control" --bind-address 127.0.0.1 --secure-port "$port" 2>"$work/control.log" &
cp_pid=$!
for _ in $(seq 50); do on_node bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null && break; sleep 0.1; done
target/release/skiff-control --data-dir "$work/control" kubeconfig --server "https://127.0.0.1:$port" > "$work/kubeconfig"
# The node's daemons get their own credentials: the kubelet is system:node:node-1 (the
# Node authorizer), the proxy system:kube-proxy (RBAC's system:node-proxier).
target/release/skiff-control --data-dir "$work/control" kubeconfig --server "https://127.0.0.1:$port" \
  --user system:node:node-1 --group system:nodes > "$work/node.kubeconfig"
target/release/skiff-control --data-dir "$work/control" kubeconfig --server "https://127.0.0.1:$port" \
  --user system:kube-proxy > "$work/proxy.kubeconfig"

echo "== worker node-1: CRI server with skiff-cni, the kubelet, the service proxy"
mkdir -p "$work/node/cni"
cat > "$work/node/cni/10-skiff.conf" <<JSON
{"cniVersion": "1.0.0", "name": "demo", "type": "skiff-cni", "bridge": "skiff0",
 "ipam": {"type": "host-local", "subnet": "10.88.0.0/24", "dataDir": "$work/node/ipam"}}
JSON
on_node_daemon "$rt" --root "$work/node/state" serve --listen "$work/node/cri.sock" \
  --image-dir "$work/node/images" --cni-conf-dir "$work/node/cni" --cni-bin-dir "$PWD/target/release" \
  2>"$work/node/cri.log" &
node_pid=$!
for _ in $(seq 50); do [ -S "$work/node/cri.sock" ] && break; sleep 0.1; done
target/release/skiffctl -r "unix://$work/node/cri.sock" import "$work/busybox.tar" --image-dir "$work/node/images"
target/release/skiff-control --data-dir "$work/control" kubelet-certs --node node-1 --san 127.0.0.1 --out "$work/node/pki"
on_node_daemon target/release/skiff-kubelet --kubeconfig "$work/node.kubeconfig" --hostname-override node-1 \
  --container-runtime-endpoint "unix://$work/node/cri.sock" --pod-log-dir "$work/node/pods" \
  --root-dir "$work/node/kubelet" \
  --tls-cert-file "$work/node/pki/kubelet.crt" --tls-private-key-file "$work/node/pki/kubelet.key" \
  --client-ca-file "$work/node/pki/ca.crt" --port 0 2>"$work/kubelet.log" &
kubelet_pid=$!
on_node_daemon target/release/skiff-proxy --kubeconfig "$work/proxy.kubeconfig" --cluster-cidr 10.88.0.0/16 --hostname-override node-1 \
  2>"$work/proxy.log" &
proxy_pid=$!
# The node's route for the service range (a real node's default route covers it).
ip -n "$netns" route add 10.96.0.0/12 dev lo
for _ in $(seq 100); do k get node node-1 >/dev/null 2>&1 && break; sleep 0.2; done
k wait --for=condition=Ready node/node-1 --timeout=60s
k get nodes -o wide

echo "== a Deployment"
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
      terminationGracePeriodSeconds: 5
      containers:
      - name: web
        image: docker.io/skiff/busybox:latest
        imagePullPolicy: IfNotPresent
        command: [sh, -c, 'echo "hello from $(hostname)" | tee /tmp/index.html; exec httpd -f -p 80 -h /tmp']
        resources:
          requests: {cpu: 100m, memory: 32Mi}
YAML
k rollout status deployment/web --timeout=120s
k get deployments,replicasets
k get pods -o wide
for ip in $(k get pods -l app=web -o jsonpath='{.items[*].status.podIP}'); do
  printf '%s answers: ' "$ip"
  on_node busybox wget -qO- "http://$ip/"
done
echo "== a NodePort Service in front of it, through skiff-proxy (nftables)"
k expose deployment/web --port 80 --type NodePort
cip=$(k get service web -o jsonpath='{.spec.clusterIP}')
np=$(k get service web -o jsonpath='{.spec.ports[0].nodePort}')
for _ in $(seq 50); do on_node nft list table ip skiff-proxy 2>/dev/null | grep -q "$cip . tcp . 80 comment \"default/web\" : goto pick-address-" && break; sleep 0.2; done
for i in 1 2 3 4; do
  printf 'ClusterIP %s answers: ' "$cip"; on_node timeout 5 busybox wget -qO- "http://$cip/"
done
printf 'NodePort 10.88.0.1:%s answers: ' "$np"; on_node timeout 5 busybox wget -qO- "http://10.88.0.1:$np/"
echo "== kubectl logs, through the API server and the kubelet API"
k logs deployment/web
echo "== kubectl exec, through the API server and the kubelet API"
k exec deployment/web -- sh -c 'echo "in $(hostname): $(cat /tmp/index.html)"'
victim=$(k get pods -l app=web -o jsonpath='{.items[0].metadata.name}')
echo "== delete pod $victim: the kubelet stops it, the ReplicaSet replaces it"
k delete pod "$victim"
k rollout status deployment/web --timeout=120s
k get pods -o wide
newest=$(k get pods -l app=web --sort-by=.metadata.creationTimestamp -o jsonpath='{.items[-1:].metadata.name}')
echo "== kubectl skiff trace pod/$newest: its path, each step timed by the component that did it"
on_node env PATH="$PWD/target/release:$PATH" kubectl skiff trace "pod/$newest" \
  --kubeconfig "$work/kubeconfig" --watch --timeout 30s
echo "== scale to 1"
k scale deployment/web --replicas=1
for _ in $(seq 60); do [ "$(k get pods -l app=web --no-headers 2>/dev/null | wc -l)" = 1 ] && break; sleep 1; done
k get pods -o wide
target/release/skiffctl -r "unix://$work/node/cri.sock" pods

echo "== CRI: a pod through skiff-runtime serve and skiffctl"
target/release/skiff-runtime --root "$work/cri" serve --listen "$work/cri.sock" --image-dir "$work/images" \
  --cni-conf-dir "$work/no-cni" 2>"$work/cri.log" &
cri_pid=$!
ctl() { target/release/skiffctl -r "unix://$work/cri.sock" "$@"; }
for _ in $(seq 50); do [ -S "$work/cri.sock" ] && break; sleep 0.1; done
ctl import "$work/busybox.tar" --image-dir "$work/images"
# No CNI network here, so the pod shares the node's network (NamespaceMode NODE = 2); a
# pod network would be refused until one is configured, as containerd refuses it.
cat > "$work/pod.yaml" <<YAML
metadata: {name: demo, namespace: default, uid: demo-1}
hostname: demo
log_directory: $work/logs
linux: {security_context: {namespace_options: {network: 2}}}
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
