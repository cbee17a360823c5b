#!/usr/bin/env bash
# Demo: build skiff-runtime and run a busybox container with it (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -p skiff-runtime
rt=target/release/skiff-runtime

bundle=$(mktemp -d /tmp/skiff-demo.XXXXXX)
trap 'rm -rf "$bundle"' EXIT
mkdir -p "$bundle/rootfs/bin" "$bundle/rootfs/proc" "$bundle/rootfs/sys" "$bundle/rootfs/dev" "$bundle/rootfs/etc"
cp "$(command -v busybox)" "$bundle/rootfs/bin/busybox"
for a in $("$bundle/rootfs/bin/busybox" --list); do
  [ "$a" = busybox ] || ln -s busybox "$bundle/rootfs/bin/$a"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$bundle/rootfs/etc/passwd"
"$rt" spec --bundle "$bundle"
# Not interactive: no terminal, and a command that shows the container's view of itself.
sed -i 's/"terminal": true/"terminal": false/' "$bundle/config.json"
sed -i 's|"sh"$|"sh", "-c", "echo hello from $(hostname), pid $$; id; grep -E \\"CapEff\|NoNewPrivs\\" /proc/self/status; ls /"|' "$bundle/config.json"
"$rt" run --bundle "$bundle" "demo-$$"
