#!/bin/sh
# Start a Skiff control plane on this machine (embedded store) and wait until it serves.
# Shared by the QEMU clusters (`skiff-vm up --kubernetes`) and the Vagrantfile.
#   NODE_IP        the address nodes reach the API server on (required)
#   BIN            where the skiff binaries are (default /usr/local/bin)
#   ALSO_BIND      another address to serve on (a VM's host-forwarded link), optional
#   DATA_DIR       default /var/lib/skiff/control
#   CONTROL_ARGS   more skiff-control flags (e.g. a shorter --node-monitor-grace-period)
set -eu
export PATH=/sbin:/usr/sbin:/bin:/usr/bin:$PATH
BIN=${BIN:-/usr/local/bin}
DATA_DIR=${DATA_DIR:-/var/lib/skiff/control}
mkdir -p "$DATA_DIR" /var/log/skiff
extra=""
[ -n "${ALSO_BIND:-}" ] && extra="--also-bind-address $ALSO_BIND"
extra="$extra ${CONTROL_ARGS:-}"
# shellcheck disable=SC2086
setsid "$BIN/skiff-control" --data-dir "$DATA_DIR" --bind-address "$NODE_IP" $extra \
  </dev/null >/var/log/skiff/control.log 2>&1 &
i=0
until grep -q "serving the Kubernetes API" /var/log/skiff/control.log 2>/dev/null; do
  i=$((i + 1)); [ "$i" -gt 600 ] && { echo "control plane did not start" >&2; tail -20 /var/log/skiff/control.log >&2; exit 1; }
  sleep 0.2
done
echo "control plane serving on https://$NODE_IP:6443"
