#!/usr/bin/env bash
# Set up a fresh machine for nvi-switch: the Debian tools the lab and the tests use, then
# the npm dependencies (which builds the native addon and better-sqlite3) and the build.
# Idempotent: installs only what is missing. Needs root for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

# command -> Debian package
declare -A PACKAGES=(
  [ip]=iproute2 [ping]=iputils-ping [tshark]=tshark [tcpdump]=tcpdump [iperf3]=iperf3
  [python3]=python3 [nc]=netcat-openbsd [make]=make [g++]=g++ [sysctl]=procps [ethtool]=ethtool
  [etcd]=etcd-server [etcdctl]=etcd-client [curl]=curl
  [qemu-system-x86_64]=qemu-system-x86 [cpio]=cpio [dhcpcd]=dhcpcd-base [modinfo]=kmod
  [promtool]=prometheus [tmux]=tmux [systemd-analyze]=systemd [chromium]=chromium
  [wireguard-go]=wireguard-go [wg]=wireguard-tools [openvpn]=openvpn [openssl]=openssl [taskset]=util-linux  # the peers bench/lab.ts measures against
)
missing=()
for cmd in "${!PACKAGES[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${PACKAGES[$cmd]}")
done
# The test guest (scripts/guest-image.sh): a distribution kernel and a static busybox.
ls /boot/vmlinuz-* >/dev/null 2>&1 || missing+=(linux-image-amd64)
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || missing+=(busybox-static)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# git keeps no file modes but the executable bit: the lab's keys are private again after a clone.
find lab/pki -name "*.key" -exec chmod 600 {} +

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
  echo "setup: npm ci (builds the native addon)"
  log=$(mktemp)
  npm ci --no-audit --no-fund >"$log" 2>&1 || { cat "$log"; rm -f "$log"; exit 1; }
  rm -f "$log"
fi
# The addon again when its C sources changed since it was built (npm ci builds it the first time).
addon=build/Release/nvi_native.node
if [ -f "$addon" ] && [ -n "$(find src/native binding.gyp -newer "$addon" -name '*.[ch]' -o -newer "$addon" -name binding.gyp | head -1)" ]; then
  echo "setup: rebuild the native addon"
  log=$(mktemp)
  npm rebuild --foreground-scripts >"$log" 2>&1 || { cat "$log"; rm -f "$log"; exit 1; }
  rm -f "$log"
fi
echo "setup: build"
npm run build --silent
bash scripts/guest-image.sh
