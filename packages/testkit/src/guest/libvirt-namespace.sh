#!/usr/bin/env bash
# Runs inside the new mount namespace (`unshare --mount --propagation private`). It hides the
# host's libvirt folders behind private ones, starts virtlogd and libvirtd, then waits for its
# stdin to close (the test called stop(), or the test process died) or a SIGTERM, and tears down:
# every domain destroyed and undefined, the daemons stopped, the loop devices listed in
# `<dir>/loop-devices` detached, any process still in the namespace killed, and <dir> removed.
# The namespace, and with it every mount made in it, is gone once its last process has exited.
#
# $1 = private folder, $2 = QEMU capability cache folder (kept between runs: the first libvirtd
# answer takes ~8 s without it), $3 = the caller's mount namespace (never the one to empty).
set -u
dir=$1 capcache=$2 parentns=$3
uri='qemu+unix:///system?socket=/run/libvirt/libvirt-sock'
me=$(readlink /proc/$$/ns/mnt)
if [ "$me" = "$parentns" ]; then echo "PLUGLINE-NS error: not in a new mount namespace"; exit 1; fi

cleanup() {
  trap - TERM INT HUP
  if [ -S /run/libvirt/libvirt-sock ]; then
    for d in $(timeout 20 virsh -q -c "$uri" list --all --name 2>/dev/null); do
      timeout 20 virsh -q -c "$uri" destroy "$d" >/dev/null 2>&1
      timeout 20 virsh -q -c "$uri" undefine "$d" >/dev/null 2>&1
    done
  fi
  for f in libvirtd virtlogd; do
    [ -f "/run/libvirt/$f.pid" ] && kill "$(cat "/run/libvirt/$f.pid")" 2>/dev/null
  done
  for _ in $(seq 100); do
    alive=0
    for f in libvirtd virtlogd; do
      [ -f "/run/libvirt/$f.pid" ] && kill -0 "$(cat "/run/libvirt/$f.pid")" 2>/dev/null && alive=1
    done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  # Anything still in this namespace was started for this harness (a QEMU libvirt lost, a
  # service a test did not stop): it must not keep the namespace and its mounts alive.
  if [ "$me" != "$parentns" ]; then
    for p in /proc/[0-9]*; do
      pid=${p#/proc/}
      [ "$pid" = "$$" ] && continue
      [ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$me" ] && kill -9 "$pid" 2>/dev/null
    done
  fi
  if [ -f "$dir/loop-devices" ]; then
    while read -r loop; do [ -n "$loop" ] && losetup -d "$loop" 2>/dev/null; done <"$dir/loop-devices"
  fi
  # The private folder goes too (stop() removes it as well; this covers a test process that died).
  case "$dir" in */plugline-libvirt-*) rm -rf "$dir" ;; esac
  echo "PLUGLINE-NS stopped"
}

fail() {
  echo "PLUGLINE-NS error: $*"
  tail -n 20 /var/log/libvirt/libvirtd.log 2>/dev/null
  cleanup
  exit 1
}

trap 'cleanup; exit 0' TERM INT HUP
for pair in run:/run/libvirt lib:/var/lib/libvirt log:/var/log/libvirt etc:/etc/libvirt; do
  src=$dir/${pair%%:*} dst=${pair#*:}
  # /run is a tmpfs: /run/libvirt exists only once some libvirtd has run since boot.
  [ "$dst" = /run/libvirt ] && mkdir -p "$dst"
  [ -d "$dst" ] || fail "$dst is missing (install libvirt-daemon-system)"
  mount --bind "$src" "$dst" || fail "mount --bind $src $dst failed"
done
[ -d /var/cache/libvirt ] || fail "/var/cache/libvirt is missing (install libvirt-daemon-system)"
mount --bind "$capcache" /var/cache/libvirt || fail "mount --bind $capcache /var/cache/libvirt failed"
virtlogd -d -p /run/libvirt/virtlogd.pid || fail "virtlogd did not start"
libvirtd -d -p /run/libvirt/libvirtd.pid || fail "libvirtd did not start"
echo "PLUGLINE-NS started"
exec 3<&0
cat <&3 >/dev/null &
wait $!
cleanup
