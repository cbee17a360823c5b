#!/bin/sh
# One member of an HA control plane's etcd (Debian's etcd-server): clients and peers over
# TLS with certificates from the cluster CA (`skiff-control etcd-certs`), client
# certificates required on both sides. Start every member, then the control planes
# (control-plane.sh with ETCD_SERVERS). Shared by the QEMU clusters and the Vagrantfile.
#   NAME NODE_IP INITIAL_CLUSTER (node-1=https://10.99.0.11:2380,...)   required
#   PKI   the member's certificates (default /var/lib/skiff/etcd/pki)
#   ETCD  the etcd binary (default: etcd on PATH)
set -eu
export PATH=/sbin:/usr/sbin:/bin:/usr/bin:$PATH
PKI=${PKI:-/var/lib/skiff/etcd/pki}
ETCD=${ETCD:-etcd}
mkdir -p /var/lib/skiff/etcd/data /var/log/skiff
setsid "$ETCD" --name "$NAME" --data-dir /var/lib/skiff/etcd/data \
  --listen-client-urls "https://$NODE_IP:2379" --advertise-client-urls "https://$NODE_IP:2379" \
  --listen-peer-urls "https://$NODE_IP:2380" --initial-advertise-peer-urls "https://$NODE_IP:2380" \
  --initial-cluster "$INITIAL_CLUSTER" --initial-cluster-state new --initial-cluster-token skiff \
  --client-cert-auth --trusted-ca-file "$PKI/ca.crt" --cert-file "$PKI/server.crt" --key-file "$PKI/server.key" \
  --peer-client-cert-auth --peer-trusted-ca-file "$PKI/ca.crt" \
  --peer-cert-file "$PKI/peer.crt" --peer-key-file "$PKI/peer.key" \
  </dev/null >/var/log/skiff/etcd.log 2>&1 &
echo "etcd member $NAME started on https://$NODE_IP:2379"
