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
