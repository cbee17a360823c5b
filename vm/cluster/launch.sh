# Sourced by control-plane.sh and node.sh: start a Skiff daemon the way this machine runs
# services. Under systemd (and with the binaries in /usr/local/bin, where the units in
# vm/systemd run them from) the unit is installed and started with the variable flags in
# /etc/default/skiff-NAME; elsewhere (the QEMU test VMs' busybox init) the daemon runs in a
# session of its own. The fixed flags are the unit's own (a test keeps them equal), so
# both ways start the same command. Logs: /var/log/skiff/NAME.log either way.
#   launch NAME "FIXED FLAGS" "VARIABLE FLAGS"
#   SKIFF_INIT=systemd|session overrides the choice.
UNITS=${UNITS:-$(cd "$(dirname "$0")/../systemd" && pwd)}
if [ -z "${SKIFF_INIT:-}" ]; then
  if [ -d /run/systemd/system ] && [ "$BIN" = /usr/local/bin ]; then SKIFF_INIT=systemd; else SKIFF_INIT=session; fi
fi
launch() {
  name=$1 fixed=$2 variable=$3
  mkdir -p /var/log/skiff
  : >"/var/log/skiff/$name.log"
  if [ "$SKIFF_INIT" = systemd ]; then
    [ "$BIN" = /usr/local/bin ] || { echo "the units run /usr/local/bin/skiff-$name: BIN=$BIN" >&2; exit 1; }
    upper=$(echo "$name" | tr '[:lower:]' '[:upper:]')
    printf 'SKIFF_%s_ARGS="%s"\n' "$upper" "$variable" >"/etc/default/skiff-$name"
    install -m 0644 "$UNITS/skiff-$name.service" /etc/systemd/system/
    systemctl daemon-reload
    systemctl enable "skiff-$name" >/dev/null 2>&1
    systemctl restart "skiff-$name"
  else
    # shellcheck disable=SC2086
    setsid "$BIN/skiff-$name" $fixed $variable </dev/null >"/var/log/skiff/$name.log" 2>&1 &
  fi
}
