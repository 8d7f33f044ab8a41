#!/bin/busybox sh
# PID 1 of the test guest (copied into the initramfs as /init by build-guest.sh).
#
# Loads the virtio and SCSI modules, then reports every block device on the console (ttyS0)
# whenever the set changes, and every 2 s anyway (a heartbeat):
#
#   PLUGLINE-DISKS <seq> [<name>=<serial>,<hex of bytes 0-15>,<hex of bytes 512-527>]... end
#
# It learns of a new or vanished disk as a real guest OS does: from the kernel's uevents (busybox
# `uevent` listens on the netlink socket, as udev does), not by polling. Each block uevent is also
# echoed at once, before the disks are read, so the host can tell the kernel's part from ours:
#
#   PLUGLINE-UEVENT <action> <device>
#
# Contents change without an event (the host writes to a plugged volume), so the disks are read
# again after 1 s without one.
#
# <serial> is the SCSI unit serial (VPD page 0x80 without its 4-byte header) or the virtio serial,
# with spaces as %20, '-' when there is none; a hex field is '-' when the disk cannot be read.
# Disks are read with O_DIRECT. A disk whose first 8 bytes are "PLGWRITE" gets "PLGGUEST:written"
# written at byte 512 (a whole sector, O_DIRECT; once: the guest checks before writing), so a test
# can prove a write made inside the guest reached the volume. While a SCSI disk goes away its
# serial may vanish before the disk does (reported as '-').
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp

# Block uevents wake the reporter through a FIFO it holds open read-write (so the writers never
# block and nothing written while it reads the disks is lost). The listener starts before the
# modules load: no disk can appear unseen.
mkfifo /tmp/uevents
exec 3<>/tmp/uevents
# shellcheck disable=SC2016 # expanded by the helper, with the event's environment
uevent sh -c '[ "$SUBSYSTEM" = block ] && [ "$DEVTYPE" = disk ] &&
  echo "PLUGLINE-UEVENT $ACTION $DEVNAME" && echo "$ACTION $DEVNAME" >&3' &

for m in $(cat /modules/order); do
  insmod "/modules/$m.ko" || echo "PLUGLINE-GUEST insmod $m failed"
done
echo "PLUGLINE-GUEST up kernel=$(uname -r) modules=$(wc -l </modules/order)"

# sectors DEV: sets $h0 and $h1 to the hex of bytes 0-15 and 512-527 of DEV, read with O_DIRECT
# (never a stale page cache); '-' when not read. One pipeline: every process counts under TCG.
sectors() {
  h=$(dd if="$1" bs=512 count=2 iflag=direct 2>/dev/null | hexdump -v -e '16/1 "%02x"')
  h0=-
  h1=-
  [ ${#h} -ge 32 ] && h0=${h:0:32}
  [ ${#h} -ge 1056 ] && h1=${h:1024:32}
}

# serial_of NAME: sets $serial (spaces as %20, trailing ones dropped; '-' when none).
serial_of() {
  serial=""
  if [ -f "/sys/block/$1/serial" ]; then
    IFS= read -r serial <"/sys/block/$1/serial" 2>/dev/null
  elif [ -f "/sys/block/$1/device/vpd_pg80" ]; then
    serial=$(dd if="/sys/block/$1/device/vpd_pg80" bs=1 skip=4 2>/dev/null | tr -d '\000')
  fi
  while [ "${serial% }" != "$serial" ]; do serial=${serial% }; done
  serial=${serial// /%20}
  [ -n "$serial" ] || serial=-
}

PLGWRITE=504c475752495445
PLGGUEST=504c4747554553543a7772697474656e # "PLGGUEST:written"
# Sector 1 as the guest writes it: a whole sector with O_DIRECT, so the kernel never
# read-modify-writes the sector before it (nor anything else) on a disk that may be going away.
printf 'PLGGUEST:written' >/tmp/guest-sector
dd if=/dev/zero bs=496 count=1 2>/dev/null >>/tmp/guest-sector

seq=0
last=""
quiet=0
while :; do
  report=""
  for d in /sys/block/sd* /sys/block/vd*; do
    [ -e "$d" ] || continue
    n=${d##*/}
    serial_of "$n"
    sectors "/dev/$n"
    if [ "$serial" != - ] && [ "$h1" != - ] && [ "$h1" != "$PLGGUEST" ]; then
      case "$h0" in
        "$PLGWRITE"*)
          dd if=/tmp/guest-sector of="/dev/$n" bs=512 seek=1 count=1 oflag=direct conv=notrunc,fsync 2>/dev/null &&
            sectors "/dev/$n"
          ;;
      esac
    fi
    report="$report $n=$serial,$h0,$h1"
  done
  if [ "$report" != "$last" ] || [ "$quiet" -ge 2 ]; then
    seq=$((seq + 1))
    echo "PLUGLINE-DISKS $seq$report end"
    last=$report
    quiet=0
  fi
  # Wait for the next block uevent (1 s at most); then take every event already queued, so one
  # reading of the disks answers them all.
  if read -t 1 event <&3; then
    while read -t 0.01 event <&3; do :; done
  else
    quiet=$((quiet + 1))
  fi
done
