"""Real Redis deployments on loopback for the tests: a Sentinel set-up and a
three-master Redis Cluster, started from the redis-server binary and stopped by PID."""

from __future__ import annotations

import random
import socket
import subprocess
from pathlib import Path

import redis
from conftest import RedisServer, wait_for


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(100):
        port = random.randrange(20000, 55000)
        if all(_is_free(p) for p in (port, port + 10000)):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class ExtraServer(RedisServer):
    """A redis-server started with extra arguments (replica, cluster node, sentinel)."""

    def __init__(self, workdir: Path, *extra: str, config: str | None = None, port: int | None = None) -> None:
        self.extra = list(extra)
        self.config = config
        self.fixed_port = port
        super().__init__(workdir)

    def start(self) -> None:
        if self.fixed_port is not None:
            self.port = self.fixed_port
        args = [self.exe]
        if self.config is not None:
            config = self.workdir / "server.conf"
            config.write_text(self.config.format(port=self.port, dir=self.workdir))
            args.append(str(config))
        args += ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.workdir), *self.extra]
        self.process = subprocess.Popen(args, stdout=open(self.workdir / "redis.log", "ab"),
                                        stderr=subprocess.STDOUT)
        wait_for(self._answers, timeout=10, message=f"redis on port {self.port}")


class TlsServer(ExtraServer):
    """A redis-server that speaks only TLS, with the given certificate files."""

    def __init__(self, workdir: Path, certs: dict) -> None:
        self.certs = certs
        super().__init__(workdir)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.exe, "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--dir", str(self.workdir), "--tls-cert-file", self.certs["server.crt"],
             "--tls-key-file", self.certs["server.key"], "--tls-ca-cert-file", self.certs["ca.crt"],
             "--tls-auth-clients", "no"],
            stdout=open(self.workdir / "redis.log", "ab"), stderr=subprocess.STDOUT)
        wait_for(self._answers, timeout=10, message=f"TLS redis on port {self.port}")

    def _answers(self) -> bool:
        try:
            return redis.Redis(port=self.port, ssl=True, ssl_ca_certs=self.certs["ca.crt"],
                               socket_timeout=1).ping()
        except redis.ConnectionError:
            return False


def make_certificates(directory) -> dict:
    """A CA and a server certificate for 127.0.0.1, made with the openssl command."""
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=redbeat-test-ca",
            "-keyout", "ca.key", "-out", "ca.crt")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
            "-out", "server.csr")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.crt")
    return {name: str(directory / f"{name}") for name in ("ca.crt", "server.crt", "server.key")}


SENTINEL_CONFIG = """port {port}
bind 127.0.0.1
dir {dir}
sentinel monitor mymaster 127.0.0.1 {master_port} 2
sentinel down-after-milliseconds mymaster 1000
sentinel failover-timeout mymaster 5000
sentinel parallel-syncs mymaster 1
"""


class SentinelSetup:
    """One master, one replica and three sentinels watching them as 'mymaster'."""

    def __init__(self, workdir: Path) -> None:
        self.servers: list[ExtraServer] = []
        self.master = self._add(ExtraServer(workdir / "master"))
        self.replica = self._add(ExtraServer(workdir / "replica", "--replicaof", "127.0.0.1",
                                             str(self.master.port)))
        wait_for(lambda: self.replica.client().info("replication").get("master_link_status") == "up",
                 timeout=15, message="replica in sync")
        self.sentinels = [
            self._add(ExtraServer(workdir / f"sentinel{i}", "--sentinel",
                                  config=SENTINEL_CONFIG.replace("{master_port}", str(self.master.port))))
            for i in range(3)
        ]
        wait_for(lambda: all(self._sentinel(s).sentinel_master("mymaster")["num-other-sentinels"] == 2
                             for s in self.sentinels), timeout=20, message="sentinels discovering each other")

    def _add(self, server: ExtraServer) -> ExtraServer:
        self.servers.append(server)
        return server

    @staticmethod
    def _sentinel(server: ExtraServer) -> redis.Redis:
        return redis.Redis(port=server.port, decode_responses=True)

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", s.port) for s in self.sentinels]

    def master_port(self) -> int:
        return int(self._sentinel(self.sentinels[0]).sentinel_get_master_addr_by_name("mymaster")[1])

    def failover(self) -> int:
        """Force a fail-over; returns the new master's port once every sentinel agrees."""
        old = self.master_port()
        self._sentinel(self.sentinels[0]).execute_command("SENTINEL", "FAILOVER", "mymaster")
        wait_for(lambda: all(int(self._sentinel(s).sentinel_get_master_addr_by_name("mymaster")[1]) != old
                             for s in self.sentinels), timeout=30, message="fail-over")
        new = self.master_port()
        wait_for(lambda: redis.Redis(port=new).info("replication")["role"] == "master", timeout=15,
                 message="new master promoted")
        return new

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()


class ClusterSetup:
    """Three masters, no replicas, slots spread by redis-cli --cluster create."""

    def __init__(self, workdir: Path) -> None:
        self.nodes = [
            ExtraServer(workdir / f"node{i}", "--cluster-enabled", "yes",
                        "--cluster-config-file", str(workdir / f"node{i}" / "nodes.conf"),
                        "--cluster-node-timeout", "2000", port=cluster_port())
            for i in range(3)
        ]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
        )
        wait_for(lambda: all(n.client().cluster("info")["cluster_state"] == "ok" for n in self.nodes),
                 timeout=30, message="cluster state ok")

    def url(self) -> str:
        return f"redis-cluster://127.0.0.1:{self.nodes[0].port}"

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.nodes[0].port, decode_responses=True)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


__all__ = ["ClusterSetup", "SentinelSetup", "ExtraServer", "TlsServer", "make_certificates"]
