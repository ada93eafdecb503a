#!/usr/bin/env bash
# What make demo, make test and make bench take from the machine (README, "What
# it takes from the machine"): sets up what the project may set up, checks the
# rest, and names the fix of each problem in one line.
#
#   bash scripts/check-machine.sh                check; exit 1 if anything is missing
#   bash scripts/check-machine.sh CMD [ARG...]   check, then run CMD with the open-file
#                                                limit and PATH it needs
#
# It sets up: cgroup v2 (mounted if no cgroup v2 is), the open-file limit (raised
# for CMD), /usr/sbin and /sbin in PATH, tcp_bbr (loaded if it is a module). A BPF
# filesystem is not set up here: hookerd and bpftool mount one themselves.
set -uo pipefail

# Open files: hookerd holds two sockets per moved connection (its default
# --max-conns 16384 needs 32,768); make test's bench holds 1,000 connections
# (about 2,100 in hookerd).
NOFILE_WANT=65536 NOFILE_MIN=4096
failed=0
say() { echo "check-machine: $*" >&2; }
fail() { say "$*"; failed=1; }

if [ "$(id -u)" -ne 0 ]; then
  say "needs root (network namespaces, cgroups, BPF): run it with sudo (sudo make test)"
  exit 1
fi

# iptables, tc, ethtool, sysctl live in /usr/sbin: a shell started with 'su'
# (not 'su -') lacks it, and hookerd runs iptables through PATH.
for d in /usr/local/sbin /usr/sbin /sbin; do
  case ":$PATH:" in *":$d:"*) ;; *) [ -d "$d" ] && PATH="$PATH:$d" ;; esac
done
export PATH

# ---------------------------------------------------------------- tools
# command:package (scripts/install-deps.sh installs the packages: make deps)
for tp in ip:iproute2 tc:iproute2 ss:iproute2 nsenter:util-linux unshare:util-linux \
          setpriv:util-linux mountpoint:util-linux mount:mount umount:mount \
          sysctl:procps iptables:iptables ip6tables:iptables bpftool:bpftool \
          tcpdump:tcpdump tshark:tshark iperf3:iperf3 curl:curl ethtool:ethtool \
          kcptun-client:kcptun kcptun-server:kcptun gnuplot:gnuplot-nox g++:build-essential \
          prometheus:prometheus systemd-analyze:systemd \
          certtool:gnutls-bin; do
  command -v "${tp%%:*}" >/dev/null || fail "${tp%%:*} is missing: make deps (package ${tp#*:})"
done
/usr/bin/python3 -c 'import pytest' 2>/dev/null ||
  fail "/usr/bin/python3 has no pytest: make deps (package python3-pytest)"
/usr/bin/python3 -c 'import yaml' 2>/dev/null ||
  fail "/usr/bin/python3 has no yaml: make deps (package python3-yaml)"
[ $failed -eq 0 ] || exit 1  # the checks below run these tools

# ---------------------------------------------------------------- kernel
kernel="kernel $(uname -r)"
newer="install Linux 6.6 or later (Debian 12: apt-get install -t bookworm-backports linux-image-amd64) and reboot"
btf=/sys/kernel/btf/vmlinux
if [ ! -r $btf ]; then
  fail "$kernel has no BTF ($btf, CONFIG_DEBUG_INFO_BTF): $newer"
else
  # Names in the kernel's own type information: no guess from the version.
  for want in "btf_trace_sock_send_length:the sock_send_length tracepoint (6.3)" \
              "btf_trace_sock_recv_length:the sock_recv_length tracepoint (6.3)" \
              "BPF_TCX_INGRESS:tcx, BPF programs on TC ingress as links (6.6)"; do
    grep -qaF "${want%%:*}" $btf || fail "$kernel lacks ${want#*:}: $newer"
  done
fi
grep -qw bpf /proc/filesystems || fail "$kernel has no BPF filesystem (CONFIG_BPF_SYSCALL): $newer"
probe=$(bpftool feature probe kernel 2>/dev/null)
for want in "program_type sock_ops:CONFIG_CGROUP_BPF" "program_type sk_msg:CONFIG_BPF_STREAM_PARSER" \
            "map_type sockhash:CONFIG_BPF_STREAM_PARSER" "map_type sockmap:CONFIG_BPF_STREAM_PARSER" \
            "map_type ringbuf:CONFIG_BPF_SYSCALL" "program_type xdp:CONFIG_BPF_SYSCALL" \
            "program_type sched_cls:CONFIG_NET_CLS_BPF" \
            "program_type raw_tracepoint:CONFIG_BPF_EVENTS"; do
  grep -qF "eBPF ${want%%:*} is available" <<<"$probe" ||
    fail "$kernel lacks BPF ${want%%:*} (${want#*:}; bpftool feature probe kernel): $newer"
done
[ -d /proc/sys/net/ipv6 ] ||
  fail "IPv6 is off (ipv6.disable=1 on the kernel command line?): the test bed uses it; remove that and reboot"

# Network namespaces, veth, and hookerd's NFQUEUE rule (the same matches) with
# the iptables backend this machine selected, in a namespace of its own that
# vanishes with the probe: nothing stays behind. Modules load on demand here.
backend=$(iptables --version 2>/dev/null | sed -n 's/.*(\(.*\)).*/\1/p')
rule=(INPUT ! -i lo -p tcp --tcp-flags RST RST -m multiport --ports 8000 -m comment
      --comment "hooker check-machine" -j NFQUEUE --queue-num 7000 --queue-bypass)
out=$(unshare --net sh -c 'ip link add hkchk0 type veth peer name hkchk1' 2>&1) ||
  fail "cannot make a veth pair in a new network namespace (CONFIG_NET_NS, CONFIG_VETH): ${out%%$'\n'*}"
for t in iptables ip6tables; do
  out=$(unshare --net "$t" -w -I "${rule[@]}" 2>&1) ||
    fail "$t (${backend:-?} backend) cannot add hookerd's NFQUEUE rule (kernel needs NFQUEUE, multiport and comment: CONFIG_NETFILTER_XT_TARGET_NFQUEUE, CONFIG_NFT_QUEUE, CONFIG_NETFILTER_XT_MATCH_MULTIPORT, CONFIG_NETFILTER_XT_MATCH_COMMENT; or the other backend: update-alternatives --set $t /usr/sbin/$t-legacy): ${out%%$'\n'*}"
done

# The bench's TCP bbr baseline: optional (the bench notes it as not measured).
if ! grep -qw bbr /proc/sys/net/ipv4/tcp_available_congestion_control; then
  if command -v modprobe >/dev/null && modprobe -q tcp_bbr 2>/dev/null; then
    say "loaded tcp_bbr (the bench's TCP bbr baseline)"
  else
    say "note: $kernel has no TCP bbr (modprobe tcp_bbr failed): the bench reports bbr as not measured"
  fi
fi

# ---------------------------------------------------------------- mounts
# cgroup v2: hookerd attaches to a cgroup v2 directory and the test bed makes
# one per host. Where systemd would have mounted it: /sys/fs/cgroup, or beside
# the v1 hierarchies (/sys/fs/cgroup/unified) when /sys/fs/cgroup holds them.
if ! awk '$3 == "cgroup2" { found = 1 } END { exit !found }' /proc/self/mounts; then
  at=/sys/fs/cgroup
  mountpoint -q $at && at=/sys/fs/cgroup/unified
  if mkdir -p $at 2>/dev/null && mount -t cgroup2 none $at 2>/dev/null; then
    say "mounted cgroup v2 at $at (there was none)"
  else
    fail "cgroup v2 is not mounted and mounting it failed: mount -t cgroup2 none $at"
  fi
fi
[ -d /run ] && [ -w /run ] ||
  fail "/run is not a writable directory (control sockets, /run/netns): mount -t tmpfs tmpfs /run"

# ---------------------------------------------------------------- limits
# RLIMIT_MEMLOCK needs nothing: since Linux 5.11 BPF memory is charged to the
# cgroup (and libbpf raises the limit itself on older kernels). RLIMIT_NOFILE:
# raised for CMD as far as the hard limit lets it.
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt $NOFILE_WANT ] && ulimit -Hn $NOFILE_WANT 2>/dev/null; then
  hard=$NOFILE_WANT
fi
soft=$(ulimit -Sn)
if [ "$soft" != unlimited ] && [ "$soft" -lt $NOFILE_WANT ]; then
  soft=$NOFILE_WANT
  [ "$hard" != unlimited ] && [ "$hard" -lt $soft ] && soft=$hard
  ulimit -Sn "$soft"
fi
if [ "$soft" != unlimited ] && [ "$soft" -lt $NOFILE_MIN ]; then
  fail "open files: at most $soft here, below the $NOFILE_MIN make test needs, and the hard limit cannot be raised (no CAP_SYS_RESOURCE?): raise it where this shell starts (as root: ulimit -Hn $NOFILE_WANT; a container: --ulimit nofile=$NOFILE_WANT)"
elif [ "$soft" != unlimited ] && [ "$soft" -lt $NOFILE_WANT ]; then
  say "note: open files limited to $soft by the hard limit: hookerd moves at most about $((soft / 2)) connections at once (ulimit -Hn $NOFILE_WANT as root lifts it)"
fi

[ $failed -eq 0 ] || exit 1
[ $# -eq 0 ] || exec "$@"
