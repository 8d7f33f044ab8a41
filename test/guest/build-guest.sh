#!/usr/bin/env bash
# Builds the tiny test guest, once per kernel version: Debian's kernel (linux-image-amd64 and the
# versioned package it depends on, fetched with `apt-get download`, extracted with `dpkg-deb -x`)
# and a busybox-static initramfs whose /init loads the virtio and SCSI modules and reports every
# block device with its serial on the serial console (see guest-init.sh).
#
# Usage: test/guest/build-guest.sh
# Prints, as its last three lines:
#   kernel-version=<uname -r of the guest>
#   kernel=<path to vmlinuz>
#   initrd=<path to initrd.img>
# Cache: $PLUGLINE_GUEST_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/plugline-guest), one folder
# per kernel package version; the initramfs is rebuilt when guest-init.sh or this script change.
# Needs: apt-get (with package lists), dpkg-deb, busybox (static), cpio, gzip.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${PLUGLINE_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/plugline-guest}
mkdir -p "$cache"
# One build at a time per cache (test files boot guests in parallel; the first build downloads).
exec 9>"$cache/.lock"
flock 9

# The modules the guest needs, as roots: their dependencies (each module's `depends=`) are added
# before them. The generic CRC providers are soft dependencies of crc-t10dif and crc64-rocksoft
# (they are requested as crypto algorithms, which needs a modprobe the guest does not have), so
# they are listed before sd_mod explicitly.
root_modules=(virtio_pci crct10dif_generic crc64_rocksoft_generic sd_mod virtio_scsi virtio_blk)

die() {
  echo "build-guest: $*" >&2
  exit 1
}

for tool in apt-get dpkg-deb cpio gzip; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (run scripts/install)"
done
busybox=$(command -v busybox || true)
[ -n "$busybox" ] || die "busybox is missing (install busybox-static)"
# The guest has no libc: busybox must be static (ldd refuses a static binary).
if ldd "$busybox" >/dev/null 2>&1; then
  die "$busybox is not statically linked (install busybox-static)"
fi

# 1. Which kernel: the versioned package linux-image-amd64 depends on.
download=$(mktemp -d "$cache/download.XXXXXX")
trap 'rm -rf "$download"' EXIT
chmod 755 "$download" # lets apt's sandbox user write there (no warning)
meta_version=""
kernel_pkg=""
if (cd "$download" && apt-get download -qq linux-image-amd64 >/dev/null 2>&1); then
  meta_deb=$(ls "$download"/linux-image-amd64_*.deb)
  depends=$(dpkg-deb -f "$meta_deb" Depends)
  kernel_pkg=$(echo "$depends" | tr ',' '\n' | sed -n 's/^ *\(linux-image-[0-9][^ ]*\).*/\1/p' | head -1)
  meta_version=$(dpkg-deb -f "$meta_deb" Version)
  [ -n "$kernel_pkg" ] || die "cannot find the kernel package in linux-image-amd64's Depends: $depends"
  rm -f "$meta_deb"
else
  # No package lists or no network: use the newest guest already built.
  newest=$(ls -1d "$cache"/linux-image-* 2>/dev/null | sort -V | tail -1 || true)
  [ -n "$newest" ] || die "apt-get download linux-image-amd64 failed and nothing is cached (run apt-get update)"
  kernel_pkg=$(basename "$newest" | sed 's/_.*//')
  meta_version=$(basename "$newest" | sed 's/^[^_]*_//')
  echo "build-guest: apt-get download failed; using the cached $kernel_pkg $meta_version" >&2
fi

dir="$cache/${kernel_pkg}_${meta_version}"
kver=${kernel_pkg#linux-image-}

# 2. The kernel and its modules (extracted once).
if [ ! -f "$dir/.extracted" ]; then
  echo "build-guest: downloading $kernel_pkg ($meta_version)" >&2
  (cd "$download" && apt-get download -qq "$kernel_pkg" >/dev/null 2>&1) ||
    die "apt-get download $kernel_pkg failed"
  rm -rf "$dir"
  mkdir -p "$dir"
  dpkg-deb -x "$download"/"$kernel_pkg"_*.deb "$dir/root"
  touch "$dir/.extracted"
fi
kernel="$dir/root/boot/vmlinuz-$kver"
moddir="$dir/root/lib/modules/$kver"
[ -f "$kernel" ] || die "no kernel at $kernel"
[ -d "$moddir" ] || die "no modules at $moddir"

# 3. The initramfs, rebuilt when the init script or this script change.
stamp=$(cat "$here/guest-init.sh" "$0" | sha256sum | cut -c1-16)
initrd="$dir/initrd-$stamp.img"
if [ ! -f "$initrd" ]; then
  echo "build-guest: building the initramfs for $kver" >&2
  stage=$(mktemp -d "$download/initramfs.XXXXXX")
  mkdir -p "$stage"/{bin,dev,proc,sys,modules}
  cp "$busybox" "$stage/bin/busybox"
  cp "$here/guest-init.sh" "$stage/init"
  chmod 755 "$stage/init"

  # Module files by name (a module's name uses '_' where its file may use '-').
  declare -A module_file=()
  while IFS= read -r -d '' f; do
    base=$(basename "$f")
    name=${base%%.ko*}
    module_file[${name//-/_}]=$f
  done < <(find "$moddir/kernel" -name '*.ko*' -print0)

  module_text() {
    case "$1" in
      *.ko.xz) xz -dc "$1" ;;
      *.ko.zst) zstd -qdc "$1" ;;
      *.ko.gz) gzip -dc "$1" ;;
      *) cat "$1" ;;
    esac
  }

  order=()
  declare -A seen=()
  add_module() {
    local name=${1//-/_}
    [ -z "${seen[$name]:-}" ] || return 0
    seen[$name]=1
    local file=${module_file[$name]:-}
    if [ -z "$file" ]; then
      # Built into this kernel: nothing to load.
      grep -q "/${name}.ko\$\|/${name//_/-}.ko\$" "$moddir/modules.builtin" 2>/dev/null && return 0
      die "module $name is neither a module nor built into $kver"
    fi
    local dep
    # The module's own `depends=` field (its .modinfo strings); no depmod/modinfo needed.
    local dep
    for dep in $(module_text "$file" | tr '\0' '\n' | sed -n 's/^depends=//p' | tr ',' ' '); do
      add_module "$dep"
    done
    order+=("$name")
  }
  for m in "${root_modules[@]}"; do add_module "$m"; done

  : >"$stage/modules/order"
  for name in "${order[@]}"; do
    module_text "${module_file[$name]}" >"$stage/modules/$name.ko"
    echo "$name" >>"$stage/modules/order"
  done
  echo "$kver" >"$stage/kernel-version"

  (cd "$stage" && find . -print0 | cpio --null -o -H newc --quiet | gzip -9) >"$initrd.tmp"
  mv "$initrd.tmp" "$initrd"
  # Older initramfs builds of this kernel are no longer used.
  find "$dir" -maxdepth 1 -name 'initrd-*.img' ! -name "$(basename "$initrd")" -delete
fi

echo "kernel-version=$kver"
echo "kernel=$kernel"
echo "initrd=$initrd"
