#!/usr/bin/env bash
# The benchmark suite: bash bench/run.sh BUILD quick|full [suite options...]
# (make bench / make bench-quick). See bench/README.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ $# -lt 2 ]; then
  echo "usage: bench/run.sh BUILD quick|full [--mechanisms tcp,bbr,kcptun,hooker,hooker:udplite] [--loss 0,1,5] [--runs N] [--parts ...] [--save FILE]" >&2
  exit 2
fi
build="$1" mode="$2"
shift 2
case "$mode" in
  quick|full) ;;
  *) echo "bench: unknown mode '$mode': quick or full" >&2; exit 2 ;;
esac
if [ "$(id -u)" -ne 0 ]; then
  echo "bench: needs root (network namespaces, cgroups, BPF): sudo make bench" >&2
  exit 2
fi
for tool in gnuplot curl iperf3 tcpdump tshark ethtool bpftool; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing: make deps" >&2; exit 2; }
done
exec /usr/bin/python3 "$here/suite.py" --build "$build" --mode "$mode" "$@"
