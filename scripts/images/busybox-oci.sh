#!/usr/bin/env bash
# Build a busybox image as an OCI image layout tarball (for `ctr image import`, skopeo,
# and Skiff's own image store), from the host's busybox-static. Nothing is downloaded.
#   busybox-oci.sh OUT.tar [IMAGE-NAME]   (default name docker.io/skiff/busybox:latest)
# LAYER_GZIP=0 stores the layer uncompressed (so a copy can recompress it, e.g. as zstd).
# IMAGE_CMD sets the image's Cmd as a JSON list (default ["sh"]).
set -euo pipefail
out=$1
name=${2:-docker.io/skiff/busybox:latest}
bb=$(command -v busybox)
work=$(mktemp -d /tmp/skiff-img.XXXXXX)
trap 'rm -rf "$work"' EXIT

root=$work/rootfs
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root" "$root/proc" "$root/sys" "$root/dev"
cp "$bb" "$root/bin/busybox"
for a in $("$root/bin/busybox" --list); do
  [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' > "$root/etc/group"
chmod 1777 "$root/tmp"

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
{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":${IMAGE_CMD:-[\"sh\"]},"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:$diffid"]},"history":[{"created_by":"skiff busybox-oci.sh"}]}
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
