#!/usr/bin/env bash
# Build an nginx image as an OCI image layout tarball, from Debian's nginx package
# (apt-get download + dpkg -x; no container registry involved), the shared libraries
# its binary needs (from this host, as ldd lists them) and busybox for a shell.
#   nginx-oci.sh OUT.tar [IMAGE-NAME]   (default docker.io/skiff/nginx:latest)
# The image serves /usr/share/nginx/html on port 80 and logs to stdout/stderr.
set -euo pipefail
out=$1
name=${2:-docker.io/skiff/nginx:latest}
here=$(cd "$(dirname "$0")" && pwd)
cache=/var/tmp/skiff-images
mkdir -p "$cache"
deb=$(ls "$cache"/nginx_*.deb 2>/dev/null | head -1 || true)
if [ -z "$deb" ]; then
  (cd "$cache" && apt-get download -q nginx >/dev/null 2>&1) || {
    echo "nginx-oci.sh: apt-get download nginx failed (is apt reachable?)" >&2; exit 1; }
  deb=$(ls "$cache"/nginx_*.deb | head -1)
fi
work=$(mktemp -d /tmp/skiff-img.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
dpkg -x "$deb" "$root"
bin=$root/usr/sbin/nginx
[ -x "$bin" ] || { echo "nginx-oci.sh: $deb has no usr/sbin/nginx" >&2; exit 1; }
# Libraries: what ldd resolves on this host, at the same paths.
ldd "$bin" | awk '/=> not found/ {print "missing: " $1; bad=1} END {exit bad}' >&2
for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
mkdir -p "$root/bin" "$root/etc/nginx" "$root/tmp" "$root/proc" "$root/sys" "$root/dev" \
  "$root/var/log/nginx" "$root/var/lib/nginx" "$root/usr/share/nginx/html" "$root/run"
cp "$(command -v busybox)" "$root/bin/busybox"
for a in sh ls cat wget ps; do ln -sf busybox "$root/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nwww-data:x:33:\nnogroup:x:65534:\n' > "$root/etc/group"
chmod 1777 "$root/tmp"
cat > "$root/etc/nginx/nginx.conf" <<'CONF'
daemon off;
user www-data;
worker_processes 1;
error_log /dev/stderr warn;
pid /run/nginx.pid;
events { worker_connections 256; }
http {
  access_log /dev/stdout;
  client_body_temp_path /tmp/client_body;
  proxy_temp_path /tmp/proxy;
  fastcgi_temp_path /tmp/fastcgi;
  uwsgi_temp_path /tmp/uwsgi;
  scgi_temp_path /tmp/scgi;
  server {
    listen 80;
    location / { root /usr/share/nginx/html; index index.html; }
  }
}
CONF
echo '<h1>Welcome to nginx on Skiff</h1>' > "$root/usr/share/nginx/html/index.html"
IMAGE_CMD='["/usr/sbin/nginx","-c","/etc/nginx/nginx.conf"]' "$here/pack-oci.sh" "$root" "$out" "$name"
