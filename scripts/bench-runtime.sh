#!/usr/bin/env bash
# Container start-to-exit latency of skiff-runtime vs runc and crun, side by side:
# `RUNTIME run` of /bin/true in the same busybox bundle (create, start, wait, delete).
# Prints the median and p90 of N runs and the ratio to skiff-runtime. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-50}
./scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
command -v crun >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq crun >/dev/null; }
cargo build --release -q -p skiff-runtime
skiff=$PWD/target/release/skiff-runtime

work=$(mktemp -d /tmp/skiff-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs/bin" "$work/rootfs/proc" "$work/rootfs/sys" "$work/rootfs/dev"
cp "$(command -v busybox)" "$work/rootfs/bin/busybox"
ln -s busybox "$work/rootfs/bin/true"
"$skiff" spec --bundle "$work"
# ociVersion 1.0.2: crun 1.8 refuses configs that say 1.2 or later.
sed -i 's/"terminal": true/"terminal": false/; s|"sh"$|"/bin/true"|; s/"ociVersion": "[0-9.]*"/"ociVersion": "1.0.2"/' "$work/config.json"

# The timing loop runs the three runtimes round-robin, so machine noise hits all alike.
# It runs in a private mount namespace with a tmpfs over /sys/fs/cgroup/unified: crun 1.8
# refuses hybrid cgroup hosts otherwise; skiff-runtime and runc drive v1 either way, and
# the host is not changed.
cat > "$work/loop.sh" <<'LOOP'
#!/usr/bin/env bash
set -eu
work=$1 n=$2 skiff=$3
if [ -d /sys/fs/cgroup/unified ] && [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]; then
  mount -t tmpfs none /sys/fs/cgroup/unified
fi
for r in skiff runc crun; do : > "$work/$r.raw"; done
for i in $(seq 1 "$n"); do
  for r in skiff runc crun; do
    case $r in skiff) bin=$skiff ;; *) bin=$r ;; esac
    t0=$(date +%s%N)
    "$bin" --root "$work/state-$r" run --bundle "$work" "b-$r-$i" >/dev/null 2>"$work/err" || { echo "$r failed:" >&2; cat "$work/err" >&2; exit 1; }
    t1=$(date +%s%N)
    echo $(( (t1 - t0) / 1000 )) >> "$work/$r.raw"
  done
done
for r in skiff runc crun; do sort -n "$work/$r.raw" > "$work/$r.times"; done
LOOP
chmod +x "$work/loop.sh"
unshare -m "$work/loop.sh" "$work" "$N" "$skiff"

stat_of() { # file → "median p90" in ms
  awk '{a[NR]=$1} END {m=a[int((NR+1)/2)]; p=a[int(NR*0.9)]; printf "%.2f %.2f\n", m/1000, p/1000}' "$1"
}
read -r sm _ < <(stat_of "$work/skiff.times")
printf '\nbusybox /bin/true, `run` (create+start+wait+delete), N=%s round-robin, %s cores\n' "$N" "$(nproc)"
printf '%-14s %10s %10s %16s\n' runtime "median ms" "p90 ms" "median / skiff"
for r in skiff runc crun; do
  read -r m p < <(stat_of "$work/$r.times")
  printf '%-14s %10s %10s %15.2fx\n' "$r" "$m" "$p" "$(awk -v a="$m" -v b="$sm" 'BEGIN{print a/b}')"
done

# What protecting the binary costs (runtime/src/exeseal.rs): every container process
# starts through skiff-exec (a 2 KB static program from a sealed memfd) instead of being
# exec'd directly. Timed here as that extra exec in front of /bin/true.
stub=$(ls -t target/release/build/skiff-runtime-*/out/skiff-exec | head -1)
: > "$work/seal.raw"; : > "$work/plain.raw"
for i in $(seq 1 $((N * 4))); do
  t0=$(date +%s%N); "$stub" -1 /bin/true true
  t1=$(date +%s%N); /bin/true
  t2=$(date +%s%N)
  echo $(( (t1 - t0) / 1000 )) >> "$work/seal.raw"; echo $(( (t2 - t1) / 1000 )) >> "$work/plain.raw"
done
sort -n "$work/seal.raw" > "$work/seal.times"; sort -n "$work/plain.raw" > "$work/plain.times"
read -r with _ < <(stat_of "$work/seal.times")
read -r without _ < <(stat_of "$work/plain.times")
printf '\nbinary protection (the exec stub in front of each container process), N=%s: %.2f ms with, %.2f ms without: %.2f ms per container process\n' \
  "$((N * 4))" "$with" "$without" "$(awk -v a="$with" -v b="$without" 'BEGIN{print a-b}')"
