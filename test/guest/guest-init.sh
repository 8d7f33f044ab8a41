#!/bin/busybox sh
# PID 1 of the test guest (copied into the initramfs as /init by build-guest.sh).
#
# Loads the virtio and SCSI modules, then reports every block device on the console (ttyS0) every
# 0.2 s when the set changes, and every 2 s anyway (a heartbeat):
#
#   PLUGLINE-DISKS <seq> [<name>=<serial>,<hex of bytes 0-15>,<hex of bytes 512-527>]... end
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

for m in $(cat /modules/order); do
  insmod "/modules/$m.ko" || echo "PLUGLINE-GUEST insmod $m failed"
done
echo "PLUGLINE-GUEST up kernel=$(uname -r) modules=$(wc -l </modules/order)"

# Reads sectors 0 and 1 of a disk with O_DIRECT (never a stale page cache) into /tmp/sectors.
read_sectors() {
  rm -f /tmp/sectors
  dd if="$1" of=/tmp/sectors bs=512 count=2 iflag=direct 2>/dev/null
}

# hex16 OFFSET: the 16 bytes at OFFSET of /tmp/sectors, as hex ('-' when not read).
hex16() {
  h=$(hexdump -v -s "$1" -n 16 -e '16/1 "%02x"' /tmp/sectors 2>/dev/null)
  [ ${#h} -eq 32 ] && echo "$h" || echo -
}

serial_of() {
  s=""
  if [ -f "/sys/block/$1/serial" ]; then
    s=$(cat "/sys/block/$1/serial" 2>/dev/null)
  elif [ -f "/sys/block/$1/device/vpd_pg80" ]; then
    s=$(dd if="/sys/block/$1/device/vpd_pg80" bs=1 skip=4 2>/dev/null | tr -d '\000')
  fi
  s=$(echo "$s" | sed 's/ *$//; s/ /%20/g')
  [ -n "$s" ] && echo "$s" || echo -
}

PLGWRITE=504c475752495445
PLGGUEST=504c4747554553543a7772697474656e # "PLGGUEST:written"
# Sector 1 as the guest writes it: a whole sector with O_DIRECT, so the kernel never
# read-modify-writes the sector before it (nor anything else) on a disk that may be going away.
mkdir -p /tmp
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
    serial=$(serial_of "$n")
    read_sectors "/dev/$n"
    h0=$(hex16 0)
    h1=$(hex16 512)
    if [ "$serial" != - ] && [ "$h1" != - ] && [ "$h1" != "$PLGGUEST" ]; then
      case "$h0" in
        "$PLGWRITE"*)
          dd if=/tmp/guest-sector of="/dev/$n" bs=512 seek=1 count=1 oflag=direct conv=notrunc,fsync 2>/dev/null &&
            read_sectors "/dev/$n" && h1=$(hex16 512)
          ;;
      esac
    fi
    report="$report $n=$serial,$h0,$h1"
  done
  if [ "$report" != "$last" ] || [ "$quiet" -ge 10 ]; then
    seq=$((seq + 1))
    echo "PLUGLINE-DISKS $seq$report end"
    last=$report
    quiet=0
  else
    quiet=$((quiet + 1))
  fi
  sleep 0.2
done
