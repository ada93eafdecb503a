#!/usr/bin/env bash
# Installs every Debian package Hooker needs to build, test and benchmark.
# Idempotent: packages already present are skipped, so a warm machine pays nothing.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev
  libcli11-dev nlohmann-json3-dev libgtest-dev
  iproute2 iptables libnetfilter-queue-dev libmnl-dev
  python3 python3-pytest curl iperf3 tcpdump tshark
  ethtool gnuplot-nox kcptun
  nginx redis-server redis-tools rsync
  procps kmod util-linux mount
  libngtcp2-dev libngtcp2-crypto-gnutls-dev libgnutls28-dev gnutls-bin
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages (${missing[*]}); run as root: sudo make deps" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-deps: installing ${missing[*]}"
apt-get update -qq
# tshark asks whether non-root users may capture; answer no without a prompt.
echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
