#!/bin/sh
# A registry for the cluster's images (Debian's docker-registry, the CNCF distribution
# registry) on NODE_IP:5000, plain HTTP on the cluster's private network. Nodes name it as
# a mirror of docker.io (skiff-runtime serve --registry-mirror docker.io=http://NODE_IP:5000,
# what node.sh does with REGISTRY_MIRRORS), so `image: nginx` resolves to it first.
# Fill it with `skopeo copy oci-archive:IMAGE.tar docker://NODE_IP:5000/library/nginx:TAG`.
#   NODE_IP   the address to serve on (required)
#   REGISTRY  the registry binary (default: docker-registry on PATH)
#   DATA_DIR  default /var/lib/skiff/registry
set -eu
export PATH=/sbin:/usr/sbin:/bin:/usr/bin:$PATH
REGISTRY=${REGISTRY:-docker-registry}
DATA_DIR=${DATA_DIR:-/var/lib/skiff/registry}
mkdir -p "$DATA_DIR/data" /var/log/skiff
cat > "$DATA_DIR/config.yml" <<CFG
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $DATA_DIR/data
http:
  addr: $NODE_IP:5000
CFG
setsid "$REGISTRY" serve "$DATA_DIR/config.yml" </dev/null >/var/log/skiff/registry.log 2>&1 &
i=0
until timeout 2 wget -qO /dev/null "http://$NODE_IP:5000/v2/" 2>/dev/null; do
  i=$((i + 1)); [ "$i" -gt 300 ] && { echo "registry did not start" >&2; tail -20 /var/log/skiff/registry.log >&2; exit 1; }
  sleep 0.2
done
echo "registry serving on http://$NODE_IP:5000"
