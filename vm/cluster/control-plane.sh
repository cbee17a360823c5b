#!/bin/sh
# Start a Skiff control plane on this machine (embedded store) and wait until it serves.
# Shared by the QEMU clusters (`skiff-vm up --kubernetes`) and the Vagrantfile; on a
# machine run by systemd with the binaries in /usr/local/bin it installs and starts
# vm/systemd/skiff-control.service (launch.sh).
#   NODE_IP        the address nodes reach the API server on (required)
#   BIN            where the skiff binaries are (default /usr/local/bin)
#   ALSO_BIND      another address to serve on (a VM's host-forwarded link), optional
#   CONTROL_ARGS   more skiff-control flags (e.g. a shorter --node-monitor-grace-period)
#   ETCD_SERVERS   an etcd cluster's client URLs (comma-separated; etcd.sh members) instead
#                  of the embedded store, with the API server's etcd client certificate
#                  from ETCD_PKI (default /var/lib/skiff/etcd/pki: skiff-control etcd-certs)
set -eu
export PATH=/sbin:/usr/sbin:/bin:/usr/bin:$PATH
BIN=${BIN:-/usr/local/bin}
. "$(dirname "$0")/launch.sh"
# The unit's fixed flags (vm/systemd/skiff-control.service).
CONTROL_FIXED="--data-dir /var/lib/skiff/control"
mkdir -p /var/lib/skiff/control
extra=""
[ -n "${ALSO_BIND:-}" ] && extra="--also-bind-address $ALSO_BIND"
if [ -n "${ETCD_SERVERS:-}" ]; then
  pki=${ETCD_PKI:-/var/lib/skiff/etcd/pki}
  extra="$extra --etcd-servers $ETCD_SERVERS --etcd-cafile $pki/ca.crt \
    --etcd-certfile $pki/apiserver-etcd-client.crt --etcd-keyfile $pki/apiserver-etcd-client.key"
fi
launch control "$CONTROL_FIXED" "--bind-address $NODE_IP $extra ${CONTROL_ARGS:-}"
i=0
until grep -q "serving the Kubernetes API" /var/log/skiff/control.log 2>/dev/null; do
  i=$((i + 1)); [ "$i" -gt 600 ] && { echo "control plane did not start" >&2; tail -20 /var/log/skiff/control.log >&2; exit 1; }
  sleep 0.2
done
echo "control plane serving on https://$NODE_IP:6443"
