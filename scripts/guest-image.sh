#!/usr/bin/env bash
# A small test guest made on this machine from Debian packages: the distribution's kernel, and an
# initramfs with busybox, dhcpcd (the guest's own DHCPv6 and RA client: nothing configures its
# address from outside), iperf3, and the virtio-net driver. Its console (ttyS0) runs a shell that
# the tests drive (test/qemu-guest.ts).
#
#   bash scripts/guest-image.sh [OUT]          (default OUT: build/guest; needs root for nothing)
#
# Writes OUT/vmlinuz and OUT/initrd.img; does nothing when both are newer than this script.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/guest}
kernel=$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -1 || true)
[ -n "$kernel" ] || { echo "guest-image: no kernel in /boot (apt-get install linux-image-amd64)" >&2; exit 1; }
kver=${kernel#/boot/vmlinuz-}
for tool in busybox dhcpcd iperf3 cpio modinfo; do
  command -v "$tool" >/dev/null || { echo "guest-image: $tool is missing (scripts/setup.sh installs it)" >&2; exit 1; }
done
ldd "$(command -v busybox)" >/dev/null 2>&1 && { echo "guest-image: busybox is not static (apt-get install busybox-static)" >&2; exit 1; }
if [ -f "$out/initrd.img" ] && [ "$out/initrd.img" -nt "$0" ] && [ "$out/vmlinuz" -nt "$kernel" ]; then exit 0; fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,run,var/run,var/lib/dhcpcd,var/db/dhcpcd,lib/modules,root}

# Static busybox, and each binary with the shared libraries it loads.
cp "$(command -v busybox)" "$root/bin/busybox"
for b in "$(command -v dhcpcd)" "$(command -v iperf3)"; do
  cp "$b" "$root/bin/"
  for lib in $(ldd "$b" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
done

# virtio-net and the modules it needs, in an order that loads (dependencies first, by modinfo).
mods=""
add_module() {
  case " $mods " in *" $1 "*) return ;; esac
  local dep
  for dep in $(modinfo -k "$kver" -F depends "$1" | tr ',' ' '); do add_module "$dep"; done
  mods="$mods $1"
}
for m in virtio_pci virtio_net; do add_module "$m"; done
for m in $mods; do
  f=$(modinfo -k "$kver" -F filename "$m")
  case "$f" in
    *.ko.xz) xz -dc "$f" >"$root/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "$f" >"$root/lib/modules/$m.ko" ;;
    *) cp "$f" "$root/lib/modules/$m.ko" ;;
  esac
done

printf 'root:x:0:0:root:/root:/bin/sh\ndhcpcd:x:100:65534:dhcpcd:/var/lib/dhcpcd:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
# IPv6 only, the address from DHCPv6 (the switch sets the M flag), the default route from the RA.
cat >"$root/etc/dhcpcd.conf" <<'EOF'
ipv6only
allowinterfaces eth0
ipv6ra_noautoconf
nohook resolv.conf
script ""
EOF

cat >"$root/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
for m in $mods; do insmod /lib/modules/\$m.ko; done
ip link set lo up
# The kernel handles no RA (dhcpcd does), and makes no address of its own beyond link-local.
echo 0 >/proc/sys/net/ipv6/conf/eth0/accept_ra
echo 0 >/proc/sys/net/ipv6/conf/eth0/autoconf
ip link set eth0 up
echo "nvi-guest: booted \$(cut -d' ' -f1 /proc/uptime) s, mac \$(cat /sys/class/net/eth0/address)"
dhcpcd -q -b eth0 2>/dev/null
# The console runs each line it reads as a command in a subshell (no prompt, no line editing; a
# line that does not parse cannot end the loop), with the terminal's echo off: what the tests
# read back is only what the commands print.
stty -F /dev/ttyS0 -echo
exec setsid sh -c 'while :; do while IFS= read -r line; do (eval "\$line"); done; done </dev/ttyS0 >/dev/ttyS0 2>&1'
EOF
chmod +x "$root/init"

mkdir -p "$out"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$out/initrd.img.tmp"
mv "$out/initrd.img.tmp" "$out/initrd.img"
cp "$kernel" "$out/vmlinuz"
echo "guest-image: $out/vmlinuz ($kver), $out/initrd.img ($(du -k "$out/initrd.img" | cut -f1) KB)"
