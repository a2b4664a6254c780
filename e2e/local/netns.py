"""Several hosts on one machine, for partition tests: each host is a network namespace with one
address on a private bridge, so its processes are reached (and cut off) by address like separate
machines. Only the namespaces' own addresses (one /24 of 10.213.0.0/16 per run) and loopback are
used; the test process itself stays in the root namespace, on the bridge's first address.

A cut between two hosts is a pair of blackhole routes, one in each namespace, so neither can
reach the other in either direction while both still reach every other host and the root
namespace (where clients run). Everything is undone by `close()`, and a run's leftovers of the
same name are removed first.
"""
import os
import shutil
import subprocess


def available():
    """None if namespaces can be made here, else why not (the tests skip, saying it)."""
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN)"
    if not shutil.which("ip"):
        return "iproute2's `ip` is not installed"
    probe = subprocess.run(["ip", "netns", "add", f"frprobe{os.getpid()}"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`ip netns add` failed: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", f"frprobe{os.getpid()}"], check=True)
    return None


def ip(*args, ns=None, check=True):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + ["ip", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=30)


class Net:
    """`hosts` namespaces named by the given names, each with an address on one bridge."""

    def __init__(self, names):
        tag = os.getpid() % 250
        self.prefix = f"fr{tag}"
        self.subnet = f"10.213.{tag}"
        self.bridge = f"{self.prefix}br"
        self.gateway = f"{self.subnet}.1"
        self.hosts = {}
        self.cuts = set()
        self.close()
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for i, name in enumerate(names):
            self.add(name, f"{self.subnet}.{i + 2}")

    def add(self, name, addr):
        ns, veth = f"{self.prefix}-{name}", f"{self.prefix}v{len(self.hosts)}"
        ip("netns", "add", ns)
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("link", "set", veth, "master", self.bridge)
        ip("link", "set", veth, "up")
        ip("addr", "add", f"{addr}/24", "dev", "eth0", ns=ns)
        ip("link", "set", "eth0", "up", ns=ns)
        ip("link", "set", "lo", "up", ns=ns)
        self.hosts[name] = (ns, addr)

    def ns(self, name):
        """The namespace of host `name` (for `ip netns exec`)."""
        return self.hosts[name][0]

    def addr(self, name):
        """The address of host `name`."""
        return self.hosts[name][1]

    def cut(self, a, b):
        """Hosts `a` and `b` can no longer reach each other (both directions)."""
        for x, y in ((a, b), (b, a)):
            ip("route", "add", "blackhole", f"{self.addr(y)}/32", ns=self.ns(x))
        self.cuts.add(frozenset((a, b)))

    def heal(self, a, b):
        """Undoes `cut(a, b)`."""
        for x, y in ((a, b), (b, a)):
            ip("route", "del", "blackhole", f"{self.addr(y)}/32", ns=self.ns(x), check=False)
        self.cuts.discard(frozenset((a, b)))

    def isolate(self, name):
        """Cuts `name` from every other host (the root namespace still reaches it)."""
        for other in self.hosts:
            if other != name and frozenset((name, other)) not in self.cuts:
                self.cut(name, other)

    def heal_all(self):
        for pair in list(self.cuts):
            self.heal(*pair)

    def close(self):
        """Removes the veths, the namespaces and the bridge (a namespace whose processes still
        run lives on until they exit, so its veth is removed by name)."""
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
        for line in links.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name.startswith(f"{self.prefix}v"):
                ip("link", "del", name, check=False)
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
        for ns in listed:
            if ns.startswith(f"{self.prefix}-"):
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        ip("link", "del", self.bridge, check=False)
