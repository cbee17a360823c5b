#!/usr/bin/env bash
# Pack a root filesystem directory into a one-layer OCI image layout tarball.
#   pack-oci.sh ROOTFS OUT.tar NAME
# LAYER_GZIP=0 stores the layer uncompressed; IMAGE_CMD sets Cmd as a JSON list
# (default ["sh"]). The tarball is reproducible: fixed order, owner and mtime.
set -euo pipefail
root=$1 out=$2 name=$3
work=$(mktemp -d /tmp/skiff-pack.XXXXXX)
trap 'rm -rf "$work"' EXIT

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }
blobs=$work/layout/blobs/sha256
mkdir -p "$blobs"
# Reproducible layer: fixed order, owner and mtime.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$root" -cf "$work/layer.tar" .
diffid=$(sha "$work/layer.tar")
if [ "${LAYER_GZIP:-1}" = 0 ]; then
  cp "$work/layer.tar" "$work/layer.blob"; lmedia=application/vnd.oci.image.layer.v1.tar
else
  gzip -n -c "$work/layer.tar" > "$work/layer.blob"; lmedia=application/vnd.oci.image.layer.v1.tar+gzip
fi
ldigest=$(sha "$work/layer.blob"); lsize=$(size "$work/layer.blob")
mv "$work/layer.blob" "$blobs/$ldigest"

cat > "$work/config.json" <<JSON
{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":${IMAGE_CMD:-[\"sh\"]},"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:$diffid"]},"history":[{"created_by":"skiff pack-oci.sh"}]}
JSON
cdigest=$(sha "$work/config.json"); csize=$(size "$work/config.json")
mv "$work/config.json" "$blobs/$cdigest"

cat > "$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$cdigest","size":$csize},"layers":[{"mediaType":"$lmedia","digest":"sha256:$ldigest","size":$lsize}]}
JSON
mdigest=$(sha "$work/manifest.json"); msize=$(size "$work/manifest.json")
mv "$work/manifest.json" "$blobs/$mdigest"

tag=${name##*:}
cat > "$work/layout/index.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$mdigest","size":$msize,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"$name","org.opencontainers.image.ref.name":"$tag"}}]}
JSON
echo '{"imageLayoutVersion":"1.0.0"}' > "$work/layout/oci-layout"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$work/layout" -cf "$out" .
echo "$out: $name (manifest sha256:$mdigest)"
