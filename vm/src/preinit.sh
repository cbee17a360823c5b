#!/bin/busybox sh
# /init: move from the initramfs (where pivot_root is impossible) onto a tmpfs root,
# then hand over to busybox init, which runs /etc/rcS and keeps the agent alive.
/bin/busybox mkdir -p /newroot
/bin/busybox mount -t tmpfs -o mode=755 tmpfs /newroot
for d in bin sbin etc lib lib64 usr var root; do
  [ -e "/$d" ] && /bin/busybox cp -a "/$d" /newroot/
done
for d in proc sys dev run tmp mnt skiff; do /bin/busybox mkdir -p "/newroot/$d"; done
exec /bin/busybox switch_root /newroot /bin/busybox init
