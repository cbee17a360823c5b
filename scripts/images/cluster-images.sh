#!/usr/bin/env bash
# Build the images a VM cluster's registry holds as docker.io's mirror (built here from
# Debian packages; nothing comes from a container registry), and print one line per
# tag: ARCHIVE=REPOSITORY:TAG, what `skiff-vm up --mirror-image` takes.
#   cluster-images.sh OUTDIR
# busybox as library/busybox (latest and its version), nginx as library/nginx (latest and
# its version), so `image: nginx` and `image: busybox:1.35.0` work as typed.
set -euo pipefail
out=$1
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
LAYER_GZIP=1 "$here/busybox-oci.sh" "$out/busybox.tar" docker.io/library/busybox:latest >/dev/null
"$here/nginx-oci.sh" "$out/nginx.tar" docker.io/library/nginx:latest >/dev/null
# sed reads everything (head would close the pipe early: SIGPIPE fails the pipeline).
bb=$(busybox 2>&1 | sed -n '1s/^BusyBox v\([0-9.]*\).*/\1/p')
deb=$(ls /var/tmp/skiff-images/nginx_*.deb | sed -n 1p)
ng=$(basename "$deb" | sed -n 's/^nginx_\([0-9.]*\).*/\1/p')
[ -n "$bb" ] && [ -n "$ng" ] || { echo "cluster-images.sh: no version for busybox ($bb) or nginx ($ng)" >&2; exit 1; }
for t in latest "$bb"; do echo "$out/busybox.tar=library/busybox:$t"; done
for t in latest "$ng"; do echo "$out/nginx.tar=library/nginx:$t"; done
