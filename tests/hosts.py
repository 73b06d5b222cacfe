"""Test hosts on one machine: each in Linux namespaces of its own, network (`ip netns`, a veth
pair to this machine, its own address), UTS (its own host name) and PID (its own process table,
so it cannot see another host's processes). This machine is the store's host: it answers each
host on the address at its end of that host's veth pair. Needs root and iproute2."""

import os
import shutil
import subprocess
from dataclasses import dataclass


class HostsError(Exception):
    """The hosts could not be made: what is missing or what `ip` said."""


@dataclass(frozen=True)
class Host:
    name: str  # its host name and its network namespace's
    address: str  # its own address
    gateway: str  # this machine's address on its link: where it reaches the store

    def command(self, *argv: str) -> list[str]:
        """`argv` run on this host: its network, its host name, its own process table (the
        command is its process 1; when it dies, so does everything it started there)."""
        return [
            "ip", "netns", "exec", self.name,
            "unshare", "--uts", "--pid", "--fork", "--kill-child", "--mount-proc",
            "sh", "-c", f'hostname {self.name} && exec "$@"', "sh", *argv,
        ]  # fmt: skip


def ip(*argv: str, host: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", host] if host else []
    done = subprocess.run([*prefix, "ip", *argv], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise HostsError(f"ip {' '.join(argv)}: {done.stderr.strip()}")


def make_hosts(prefix: str, count: int, subnet: int = 77) -> list[Host]:
    """`count` hosts named `<prefix>-1`, ...: host n is 10.<subnet>.n.2, this machine
    10.<subnet>.n.1 on its link. `remove_hosts` takes them away."""
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        raise HostsError("ip (iproute2) and unshare (util-linux) are needed: make netns-install")
    if os.geteuid() != 0:
        raise HostsError("network namespaces need root")
    hosts = []
    for n in range(1, count + 1):
        host = Host(f"{prefix}-{n}", f"10.{subnet}.{n}.2", f"10.{subnet}.{n}.1")
        outside, inside = f"{prefix}o{n}"[-15:], f"{prefix}i{n}"[-15:]  # interface names: 15 max
        ip("netns", "add", host.name)
        hosts.append(host)
        try:
            ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            ip("link", "set", inside, "netns", host.name)
            ip("addr", "add", f"{host.gateway}/24", "dev", outside)
            ip("link", "set", outside, "up")
            ip("addr", "add", f"{host.address}/24", "dev", inside, host=host.name)
            ip("link", "set", inside, "up", host=host.name)
            ip("link", "set", "lo", "up", host=host.name)
        except HostsError:
            remove_hosts(hosts)
            raise
    return hosts


def remove_hosts(hosts: list[Host]) -> None:
    """Delete the hosts' namespaces (their veth pairs go with them)."""
    for host in hosts:
        subprocess.run(["ip", "netns", "delete", host.name], capture_output=True, timeout=30)
