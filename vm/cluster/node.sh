#!/bin/sh
# Join this machine to a Skiff cluster as a worker: the runtime, a CNI configuration that
# names no subnet (the node's podCIDR comes from the control plane), the kubelet (which
# joins with the bootstrap token) and the proxy (with the kubelet's credentials, the
# host-gw pod network and the node's cluster DNS). Shared by the QEMU clusters
# (`skiff-vm up --kubernetes`) and the Vagrantfile; on a machine run by systemd with the
# binaries in /usr/local/bin it installs and starts the units of vm/systemd (launch.sh).
#   NODE NODE_IP SERVER TOKEN CA_HASH   required (what `skiff-control token create` prints)
#   BIN      skiff binaries (default /usr/local/bin); CNI_BIN: where skiff-cni is (default BIN)
#   IMAGES   image archives to import before pods start (space-separated), optional
#   POD_NETWORK host-gw (default) or vxlan
#   KUBELET_ARGS PROXY_ARGS  more skiff-kubelet and skiff-proxy flags (e.g. --api-servers
#                with every API server of an HA control plane), optional
#   REGISTRY_MIRRORS  space-separated REGISTRY=URL mirrors for the runtime, optional
#                     (e.g. docker.io=http://10.99.0.11:5000, what registry.sh serves)
set -eu
export PATH=/sbin:/usr/sbin:/bin:/usr/bin:$PATH
BIN=${BIN:-/usr/local/bin}
CNI_BIN=${CNI_BIN:-$BIN}
POD_NETWORK=${POD_NETWORK:-host-gw}
. "$(dirname "$0")/launch.sh"
# The units' fixed flags (vm/systemd/skiff-*.service).
RUNTIME_FIXED="--root /run/skiff-runtime serve --listen /run/skiff/cri.sock --image-dir /var/lib/skiff/images --cni-conf-dir /etc/cni/net.d --cni-bin-dir /usr/local/lib/skiff/cni"
KUBELET_FIXED="--kubeconfig /etc/skiff/kubelet.kubeconfig --container-runtime-endpoint unix:///run/skiff/cri.sock --root-dir /var/lib/skiff/kubelet"
PROXY_FIXED="--kubeconfig /etc/skiff/kubelet.kubeconfig"
mkdir -p /etc/skiff /etc/cni/net.d /var/lib/skiff /var/log/skiff /run/skiff
cat > /etc/cni/net.d/10-skiff.conf <<CNI
{"cniVersion": "1.0.0", "name": "skiff", "type": "skiff-cni", "bridge": "skiff0",
 "clusterCidr": "10.244.0.0/16",
 "ipam": {"type": "host-local", "subnet": "usePodCidr", "dataDir": "/var/lib/skiff/ipam"}}
CNI
wait_for() {
  i=0
  until [ -e "$1" ]; do
    i=$((i + 1)); [ "$i" -gt 900 ] && { echo "$2 did not come up" >&2; tail -20 "/var/log/skiff/$2.log" >&2; exit 1; }
    sleep 0.2
  done
}
mirrors=""
for m in ${REGISTRY_MIRRORS:-}; do mirrors="$mirrors --registry-mirror $m"; done
rm -f /run/skiff/cri.sock
launch runtime "$RUNTIME_FIXED" "--cni-bin-dir $CNI_BIN $mirrors"
wait_for /run/skiff/cri.sock runtime
for img in ${IMAGES:-}; do
  "$BIN/skiffctl" -r unix:///run/skiff/cri.sock import "$img" --image-dir /var/lib/skiff/images >/dev/null
done
launch kubelet "$KUBELET_FIXED" "--server $SERVER --token $TOKEN --ca-cert-hash $CA_HASH \
  --hostname-override $NODE --node-ip $NODE_IP --cluster-dns 10.96.0.10 \
  --pod-log-dir /var/log/pods ${KUBELET_ARGS:-}"
wait_for /etc/skiff/kubelet.kubeconfig kubelet
launch proxy "$PROXY_FIXED" "--hostname-override $NODE --cluster-cidr 10.244.0.0/16 \
  --pod-network $POD_NETWORK --cluster-dns 10.96.0.10 ${PROXY_ARGS:-}"
echo "$NODE joined"
