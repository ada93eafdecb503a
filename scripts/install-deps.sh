#!/usr/bin/env bash
# Installs every Debian package Hooker needs to build, test and benchmark.
# Idempotent: packages already present are skipped, so a warm machine pays nothing.
#   install-deps.sh           everything (build, tests, bench)
#   install-deps.sh --build   what building hookerd and hookerctl takes (the
#                             container image's build stage)
set -euo pipefail

BUILD_PKGS=(
  build-essential cmake pkg-config clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev
  libcli11-dev nlohmann-json3-dev libtomlplusplus-dev libgtest-dev libnetfilter-queue-dev libmnl-dev
)
PKGS=(
  "${BUILD_PKGS[@]}"
  iproute2 iptables
  python3 python3-pytest curl iperf3 tcpdump tshark
  ethtool gnuplot-nox kcptun
  nginx redis-server redis-tools rsync
  procps kmod util-linux mount
  # issue 13: the e2e test's real Prometheus server; the packaging test
  # reads YAML and runs systemd-analyze verify (Debian 12's systemd has it,
  # a fresh container may lack systemd).
  prometheus python3-yaml systemd
  libngtcp2-dev libngtcp2-crypto-gnutls-dev libgnutls28-dev gnutls-bin
)
[ "${1:-}" = "--build" ] && PKGS=("${BUILD_PKGS[@]}")

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
