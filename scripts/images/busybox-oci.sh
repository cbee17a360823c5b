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
# Members listed in groups: the CRI adds them as supplementary groups, as containerd does.
printf 'root:x:0:\nwheel:x:10:root\nusers:x:100:nobody\nnobody:x:65534:\n' > "$root/etc/group"
chmod 1777 "$root/tmp"
"$(dirname "$0")/pack-oci.sh" "$root" "$out" "$name"

