"""Separate hosts on one machine, for tests: Linux namespaces on a bridge (root only).

    with Lab() as lab:
        db = lab.add_host("db")                              # its own network namespace, an address on the bridge
        proc = db.popen(["postgres", ...])                  # runs inside it
        worker = lab.add_host("host1")
        proc = worker.popen(argv, isolated=True)            # + its own UTS (hostname host1), PID and mount namespace
        worker.kill_machine()                               # kill -9 of everything in its PID namespace

Everything a Lab makes is removed by close(), pass or fail: the processes it started (their process groups),
whatever else still runs in its network namespaces (`ip netns pids`), the namespaces, the veth links and the
bridge. Names carry a random id, so a lab never touches another lab's or the machine's own interfaces.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

# Isolated hosts: UTS for the hostname, PID so that killing its init kills the whole machine, mount so that
# its /proc shows only its own processes. --kill-child: if unshare dies, the machine dies with it.
UNSHARE_HOST = ["unshare", "--uts", "--pid", "--mount", "--fork", "--kill-child", "--mount-proc"]


class LabError(RuntimeError):
    """Namespaces cannot be made here (not root, no ip/unshare, a kernel without namespaces)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def can_make_namespaces() -> str | None:
    """None when this process can build a lab, else why not."""
    if os.geteuid() != 0:
        return "not root: network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN"
    name = f"hsprobe{uuid.uuid4().hex[:6]}"
    try:
        _ip("netns", "add", name)
        try:
            done = subprocess.run(["ip", "netns", "exec", name, *UNSHARE_HOST, "true"], capture_output=True,
                                  text=True, timeout=30)
            if done.returncode != 0:
                return f"unshare in a network namespace failed: {done.stderr.strip()}"
        finally:
            _ip("netns", "del", name, check=False)
    except (LabError, OSError) as e:
        return str(e)
    return None


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.231.0.0/16 that no interface of this machine uses."""
    used = _ip("-o", "-4", "addr", "show").stdout
    for third in random.sample(range(256), 256):
        net = ipaddress.IPv4Network(f"10.231.{third}.0/24")
        if f" 10.231.{third}." not in used:
            return net
    raise LabError("no free /24 in 10.231.0.0/16")


@dataclass
class Host:
    """A network namespace with one address on the lab's bridge."""

    lab: Lab
    name: str
    netns: str
    address: str
    veth: str  # its root-namespace end, on the bridge
    procs: list[subprocess.Popen] = field(default_factory=list)

    def popen(self, argv: list[str], *, isolated: bool = False, **kwargs) -> subprocess.Popen:
        """Start argv in this host's network namespace, in a new session (process group).

        isolated: also in new UTS, PID and mount namespaces, with the hostname set to the host's name.
        """
        cmd = ["ip", "netns", "exec", self.netns]
        if isolated:
            cmd += [*UNSHARE_HOST, "--", "sh", "-c", 'hostname "$0" && exec "$@"', self.name]
        proc = subprocess.Popen(cmd + list(argv), start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def machine_init(self, proc: subprocess.Popen, timeout: float = 10) -> int:
        """The pid (as the root namespace sees it) of the PID namespace's init that `unshare --fork` made."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
                if children:
                    return int(children[0])
            time.sleep(0.05)
        raise LabError(f"{self.name}: unshare (pid {proc.pid}) has no child after {timeout} s")

    def kill_machine(self, proc: subprocess.Popen) -> None:
        """kill -9 of the machine proc runs on: its PID namespace's init, and so everything inside."""
        os.kill(self.machine_init(proc), signal.SIGKILL)

    def pids(self) -> list[int]:
        return [int(p) for p in _ip("netns", "pids", self.netns, check=False).stdout.split()]

    def remove(self) -> None:
        """Kill what it started (process groups) and whatever else runs in it; delete the namespace."""
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for _ in range(50):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        _ip("link", "del", self.veth, check=False)  # both ends; deleting the namespace alone frees them later
        _ip("netns", "del", self.netns, check=False)
        self.lab.hosts.remove(self)


class Lab:
    """A bridge in the root namespace (with the first address, so tests reach the hosts) and hosts on it."""

    def __init__(self):
        self.id = uuid.uuid4().hex[:5]
        self.bridge = f"hsbr{self.id}"
        self.subnet = _free_subnet()
        self.hosts: list[Host] = []
        self._next = 2
        _ip("link", "add", self.bridge, "type", "bridge")
        try:
            _ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise

    @property
    def gateway(self) -> str:
        return str(self.subnet[1])

    def add_host(self, name: str) -> Host:
        n = self._next
        self._next += 1
        host = Host(self, name, f"hs{self.id}-{name}", str(self.subnet[n]), f"hs{self.id}v{n}")
        _ip("netns", "add", host.netns)
        self.hosts.append(host)
        _ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
        _ip("link", "set", host.veth, "master", self.bridge, "up")
        _ip("-n", host.netns, "addr", "add", f"{host.address}/{self.subnet.prefixlen}", "dev", "eth0")
        _ip("-n", host.netns, "link", "set", "eth0", "up")
        _ip("-n", host.netns, "link", "set", "lo", "up")
        return host

    def leftovers(self) -> list[str]:
        """What of this lab still exists: namespaces and links (empty after close())."""
        namespaces = [n.split()[0] for n in _ip("netns", "list", check=False).stdout.splitlines()]
        links = _ip("-o", "link", "show", check=False).stdout
        return ([n for n in namespaces if n.startswith(f"hs{self.id}-")]
                + [w.rstrip(":").split("@")[0] for w in links.split() if w.startswith(f"hs{self.id}")
                   or w.startswith(self.bridge)])

    def close(self) -> None:
        for host in list(self.hosts):
            host.remove()
        _ip("link", "del", self.bridge, check=False)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
