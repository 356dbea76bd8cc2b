#!/bin/sh
# Run a command under a Linux kernel that has ESP (esp4, rfc4106(gcm(aes))), for
# test/esp-kernel-interop.test.ts when the host kernel has none (CONFIG_INET_ESP unset, no
# loadable modules): boots an installed distribution kernel (/boot/vmlinuz-*, its modules
# in /lib/modules) under qemu, with this host's root file system shared read-only over 9p
# as the guest's root, and runs the command there as root in the same directory. The exit
# status is the command's; 2 when the VM could not run it.
#
#   test/kernel/kernel-vm.sh [command ...]        default: node dist/test/kernel/esp-kernel-interop.js
#
# Needs qemu-system-x86_64 (Debian: qemu-system-x86), busybox, and a kernel in /boot whose
# modules are installed (NVI_VM_KERNEL=/boot/vmlinuz-... picks one). Runs under TCG by
# default (about 90 s for the interop test); NVI_VM_ACCEL=kvm is faster where KVM works
# (in a nested VM qemu+KVM may stop with "KVM internal error ... emulation failure").
# NVI_VM_TIMEOUT (s, default 600) bounds the whole run.
#
# Steps (host): 1. pick the kernel; 2. build an initramfs (busybox, the 9p modules
# decompressed); 3. boot it with two 9p shares: `hostroot` (/, read-only) and `nviout` (a
# temporary directory that carries the command in and the exit status out); 4. return the
# status the guest wrote. Guest, stage 1 (initramfs /init): mount the shares, switch_root
# into the host's root. Stage 2 (this script with NVI_VM_GUEST=1): mount proc, sys, dev,
# tmpfs on /run; load the ESP modules; run the command; write its status; reboot (qemu runs
# with -no-reboot, so it exits).
set -eu

if [ "${NVI_VM_GUEST:-}" = 1 ]; then
  out=/tmp/nvi-out
  mount -t proc proc /proc
  mount -t sysfs sys /sys
  mount -t devtmpfs dev /dev
  mkdir -p /dev/pts /dev/shm
  mount -t devpts devpts /dev/pts
  mount -t tmpfs tmpfs /dev/shm
  mount -t tmpfs tmpfs /run
  # Loaded up front so that a missing module is reported here, not as a test failure.
  modprobe -a veth esp4 xfrm_user gcm ghash-generic aesni-intel seqiv || echo "kernel-vm: modprobe failed" >&2
  status=0
  (cd "$(cat $out/cwd)" && HOME=/tmp PATH="$(cat $out/path)" sh "$out/cmd") || status=$?
  echo "$status" > "$out/status"
  sync
  echo b > /proc/sysrq-trigger
  sleep 10
fi

kernel="${NVI_VM_KERNEL:-$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)}"
[ -n "$kernel" ] && [ -r "$kernel" ] || { echo "kernel-vm: no kernel image in /boot (set NVI_VM_KERNEL)" >&2; exit 2; }
kver="${kernel##*/vmlinuz-}"
[ -d "/lib/modules/$kver" ] || { echo "kernel-vm: /lib/modules/$kver is missing for $kernel" >&2; exit 2; }
command -v qemu-system-x86_64 >/dev/null || { echo "kernel-vm: qemu-system-x86_64 not installed (apt-get install qemu-system-x86)" >&2; exit 2; }
accel="${NVI_VM_ACCEL:-tcg}"
[ "$accel" != kvm ] || [ -w /dev/kvm ] || { echo "kernel-vm: /dev/kvm is not usable" >&2; exit 2; }

work="$(mktemp -d /tmp/nvi-kvm.XXXXXX)"
trap 'rm -rf "$work"' EXIT INT TERM
script="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"

# 2. initramfs: busybox with its libraries, the 9p client modules, /init.
root="$work/initramfs"
mkdir -p "$root/bin" "$root/mods" "$root/newroot"
cp /usr/bin/busybox "$root/bin/busybox"
for lib in $(ldd /usr/bin/busybox | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
n=0
for ko in $(modprobe -S "$kver" --show-depends -a 9p 9pnet_virtio | awk '$1 == "insmod" { print $2 }' | awk '!seen[$0]++'); do
  n=$((n + 1))
  case "$ko" in
    *.xz) xz -dc "$ko" > "$root/mods/$n.ko" ;;
    *.zst) zstd -dcq "$ko" > "$root/mods/$n.ko" ;;
    *) cp "$ko" "$root/mods/$n.ko" ;;
  esac
done
cat > "$root/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc 2>/dev/null || { mkdir /proc; mount -t proc proc /proc; }
for m in \$(ls /mods | sort -n); do insmod /mods/\$m; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro hostroot /newroot
mount -t tmpfs tmpfs /newroot/tmp
mkdir /newroot/tmp/nvi-out
mount -t 9p -o trans=virtio,version=9p2000.L nviout /newroot/tmp/nvi-out
umount /proc
export NVI_VM_GUEST=1
exec switch_root /newroot /bin/sh $script
EOF
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet) > "$work/initramfs.cpio"

# 3. the command, its directory and PATH go in through the share.
mkdir -p "$work/out"
if [ "$#" -eq 0 ]; then set -- node dist/test/kernel/esp-kernel-interop.js; fi
for a in "$@"; do printf "'%s' " "$(printf '%s' "$a" | sed "s/'/'\\\\''/g")"; done > "$work/out/cmd"
pwd > "$work/out/cwd"
printf '%s' "$PATH" > "$work/out/path"

timeout "${NVI_VM_TIMEOUT:-600}" qemu-system-x86_64 \
  -accel "$accel" -cpu "${NVI_VM_CPU:-max}" -smp 2 -m 2048 -nographic -no-reboot -nodefaults -serial stdio \
  -kernel "$kernel" -initrd "$work/initramfs.cpio" \
  -append "console=ttyS0 quiet loglevel=3 panic=-1" \
  -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
  -virtfs "local,path=$work/out,mount_tag=nviout,security_model=none" </dev/null

# 4.
if [ ! -s "$work/out/status" ]; then
  echo "kernel-vm: the guest did not report a status (boot failed or timed out)" >&2
  exit 2
fi
exit "$(cat "$work/out/status")"
