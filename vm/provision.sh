#!/bin/sh
# Provision a Skiff node: kernel modules, cgroup v2 delegation, forwarding sysctls.
# The QEMU test images run this at boot (from /etc/rcS); the Vagrantfile runs it too,
# so this part of a Vagrant node is exercised by every VM test run.
MODULES="virtio_net virtio_console 9pnet_virtio 9p veth bridge br_netfilter nf_tables nft_chain_nat nft_nat nft_ct nft_numgen nft_masq nft_fib_inet nft_reject_inet nft_reject_ipv4 nft_fib_ipv4 nf_nat nf_conntrack ip_tables iptable_nat iptable_filter xt_MASQUERADE xt_conntrack xt_comment xt_statistic xt_mark overlay vxlan tun"

if [ -f /etc/modules.order ]; then
  # Test image: no modules.dep, so insmod in the dependency order computed at build time.
  while read -r m; do insmod "$m" 2>/dev/null; done < /etc/modules.order
else
  for m in $MODULES; do modprobe "$m" 2>/dev/null || echo "provision: module $m not available" >&2; done
fi

# cgroup v2 must be the unified hierarchy; delegate every controller below the root.
if [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" != cgroup2fs ]; then
  echo "provision: /sys/fs/cgroup is not cgroup v2 (boot with systemd.unified_cgroup_hierarchy=1)" >&2
fi
for c in $(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null); do
  echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
done

# Pods and services route through the node.
echo 1 > /proc/sys/net/ipv4/ip_forward
[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] && echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables
exit 0
