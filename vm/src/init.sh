#!/bin/sh
# /etc/rcS of Skiff test VMs (busybox init runs it once, then respawns the agent).
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp /var/run /var/lib /etc
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /var/lib
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# The same provisioning a Vagrant node gets (vm/provision.sh).
sh /etc/skiff-provision.sh
for p in $(cat /proc/cmdline); do
  case "$p" in
    skiff.name=*) name=${p#skiff.name=} ;;
    skiff.ip=*) ip=${p#skiff.ip=} ;;
  esac
done
hostname "${name:-skiff-vm}"
echo "127.0.0.1 localhost" > /etc/hosts
ip link set lo up
if [ -n "$ip" ] && ip link show eth0 >/dev/null 2>&1; then
  ip link set eth0 up
  ip addr add "$ip" dev eth0
fi
mkdir -p /skiff
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 skiff /skiff
echo "SKIFF-VM-READY $name"
