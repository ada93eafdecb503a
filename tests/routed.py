"""Two hosts with a router between them (issue 14: real paths), in three
network namespaces:

    a:eth0 10.77.1.1 fd77:1::1 <-> r:a | router | r:b <-> b:eth0 10.77.2.2 fd77:2::2

    with RoutedHosts(mtu=1280) as bed:
        ...

Each host's default route goes through the router, which forwards both
families. `mtu` is the router's links' MTU: both ends of both veths, so the
hosts' TCP connections learn it as their MSS. The router's ports neither
segment nor coalesce (no GSO/TSO there, no GRO on the hosts): a capture on a
host shows every packet as the wire between them carries it. Everything else
(cgroups, processes, teardown) is TwoHosts'.

The router can also be a firewall that drops UDP (`drop_udp`), and a NAT:
`masquerade` rewrites what a's side sends out of the router's b link to the
router's own address there, as a home router or a node's masquerade does,
and `udp_mapping_timeout` shortens how long its UDP mappings live idle.
All of it lives in the router's namespace and goes with it.
"""
from __future__ import annotations

from testbed import NETNS_DIR, Host, TwoHosts, _sh

LINKS = {"a": ("10.77.1.1", "fd77:1::1", "10.77.1.254", "fd77:1::fe", 24),
         "b": ("10.77.2.2", "fd77:2::2", "10.77.2.254", "fd77:2::fe", 24)}


class RoutedHosts(TwoHosts):
    def __init__(self, mtu: int = 1500, prefix: str | None = None):
        super().__init__(prefix=prefix)
        self.mtu = mtu
        self.router: str | None = None  # the router's netns

    def router_run(self, argv, check=True):
        return _sh(["nsenter", f"--net={NETNS_DIR / self.router}", "--", *argv], check=check)

    def _tables(self, argv, on: bool):
        """One rule (`-t TABLE` if given, then CHAIN ...) added or deleted,
        for both families."""
        op = "-A" if on else "-D"
        table = argv[:2] if argv[0] == "-t" else []
        rest = argv[len(table):]
        for tool in ("iptables", "ip6tables"):
            self.router_run([tool, *table, op, *rest])

    def drop_udp(self, on: bool = True):
        """The router forwards TCP but drops every UDP datagram (a firewall
        that passes TCP only), or no longer does."""
        self._tables(["FORWARD", "-p", "udp", "-j", "DROP"], on)

    def masquerade(self, on: bool = True):
        """What leaves the router towards b leaves from the router's address
        on that link (a's address and ports rewritten), both families."""
        self._tables(["-t", "nat", "POSTROUTING", "-o", "b", "-j", "MASQUERADE"], on)

    def udp_mapping_timeout(self, seconds: int):
        """How long the router's conntrack keeps an idle UDP mapping (its
        netns's own sysctls), whether it saw replies or not."""
        for key in ("nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream"):
            self.router_run(["sysctl", "-q", "-w", f"net.netfilter.{key}={seconds}"])

    def set_mtu(self, mtu: int):
        """The MTU of the router's links (all four veth ends)."""
        for h in (self.a, self.b):
            _sh(["ip", "-n", h.netns, "link", "set", h.iface, "mtu", str(mtu)])
            _sh(["ip", "-n", self.router, "link", "set", "dev", h.name, "mtu", str(mtu)])
        self.mtu = mtu

    def _build(self):
        ns = {n: f"{self.prefix}{n}" for n in ("a", "b", "r")}
        for n in ("a", "b"):
            self._add_netns(ns[n])
        self.router = ns["r"]
        self._add_netns(self.router)
        for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
            self.router_run(["sysctl", "-q", "-w", key])
        self.a = Host(self, "a", ns["a"], self._add_cgroup(ns["a"]), *LINKS["a"][:2])
        self.b = Host(self, "b", ns["b"], self._add_cgroup(ns["b"]), *LINKS["b"][:2])
        for h in (self.a, self.b):
            ip4, ip6, gw4, gw6, plen = LINKS[h.name]
            _sh(["ip", "link", "add", "eth0", "netns", h.netns, "type", "veth",
                 "peer", "name", h.name, "netns", self.router])
            _sh(["ip", "-n", h.netns, "addr", "add", f"{ip4}/{plen}", "dev", "eth0"])
            _sh(["ip", "-n", h.netns, "addr", "add", f"{ip6}/64", "dev", "eth0", "nodad"])
            _sh(["ip", "-n", self.router, "addr", "add", f"{gw4}/{plen}", "dev", h.name])
            _sh(["ip", "-n", self.router, "addr", "add", f"{gw6}/64", "dev", h.name, "nodad"])
            _sh(["ip", "-n", h.netns, "link", "set", "eth0", "up"])
            _sh(["ip", "-n", self.router, "link", "set", "dev", h.name, "up"])
            _sh(["ip", "-n", h.netns, "route", "add", "default", "via", gw4])
            _sh(["ip", "-n", h.netns, "-6", "route", "add", "default", "via", gw6])
            self.router_run(["ethtool", "-K", h.name, "tso", "off", "gso", "off",
                             "tx-udp-segmentation", "off"])
            _sh(["nsenter", f"--net={h.netns_path}", "--", "ethtool", "-K", "eth0",
                 "gro", "off"])
        self.set_mtu(self.mtu)
        self._probe()
