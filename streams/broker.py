"""A real single-node Apache Kafka (KRaft) for development, tests and the demo, without Docker.

The broker's jars come from Maven Central through `docker/kafka/pom.xml` and are cached per pom
content, so every state folder on the machine shares one download. Each state folder holds one
broker: its data directory, generated config, log and pid file.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from streams.acls import Acl, AclError, create_acls

REPO_ROOT = Path(__file__).resolve().parent.parent
POM = REPO_ROOT / "docker" / "kafka" / "pom.xml"
LOG4J = REPO_ROOT / "docker" / "kafka" / "log4j2.yaml"


class BrokerError(RuntimeError):
    """The local broker could not be resolved, started or stopped."""


def kafka_version() -> str:
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    if not match:
        raise BrokerError(f"{POM} does not declare <kafka.version>")
    return match.group(1)


def libs_dir() -> Path:
    """The jar cache for the pom as it is now; `FACTORY_KAFKA_LIBS` overrides it."""
    if os.environ.get("FACTORY_KAFKA_LIBS"):
        return Path(os.environ["FACTORY_KAFKA_LIBS"])
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "factory-pulse" / f"kafka-{kafka_version()}-{digest}"


def resolve_jars() -> Path:
    """Download the broker's runtime classpath with Maven once; return the folder."""
    target = libs_dir()
    marker = target / ".complete"
    if marker.exists():
        return target
    if not POM.exists():
        raise BrokerError(f"{POM} is missing: run factory-pulse from a checkout of the project")
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven (mvn) is not on PATH; install it (apt-get install maven)")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    cmd = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
           "-DincludeScope=runtime", f"-DoutputDirectory={partial}"]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BrokerError(f"Maven could not resolve Kafka:\n{result.stdout}\n{result.stderr}")
    jars = {p.name for p in partial.glob("*.jar")}
    for needed in ("kafka_2.13-", "log4j-core-", "log4j-slf4j-impl-"):
        if not any(j.startswith(needed) for j in jars):
            raise BrokerError(f"resolved classpath lacks {needed}*.jar")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    marker.write_text(kafka_version())
    return target


CONTROLLER_PRINCIPAL = "controller"


@dataclass(frozen=True, slots=True)
class BrokerSecurity:
    """A SASL/SCRAM-SHA-256-only client listener with these users (stored at first format).

    With `acls` (even empty) the broker authorizes every request: only the `admin` user, the
    broker's own controller principal and these grants are allowed, everything else is denied.
    No listener takes an unauthenticated client, who would be the user ANONYMOUS: the
    controller's takes SASL/PLAIN with a password made up at each start, known only to the
    broker's config file.
    """

    users: dict[str, str]
    admin: str = "admin"
    acls: tuple[Acl, ...] | None = None

    def __post_init__(self) -> None:
        if CONTROLLER_PRINCIPAL in self.users:
            raise BrokerError(f"{CONTROLLER_PRINCIPAL!r} is the broker's own principal")
        if self.admin not in self.users:
            raise BrokerError(f"the admin user {self.admin!r} has no password")

    def props(self) -> dict[str, str]:
        password = self.users[self.admin]
        controller_password = secrets.token_urlsafe(24)
        props = {
            "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,"
                                              "CONTROLLER:SASL_PLAINTEXT",
            "inter.broker.listener.name": "SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": "SCRAM-SHA-256",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-256",
            "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{self.admin}" password="{password}";',
            # SCRAM users live in the metadata log, which the controller serves: its own
            # listener can only check a static PLAIN user.
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config":
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="{CONTROLLER_PRINCIPAL}" password="{controller_password}" '
                f'user_{CONTROLLER_PRINCIPAL}="{controller_password}";',
        }
        if self.acls is not None:
            props.update({
                "authorizer.class.name":
                    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "super.users": f"User:{self.admin};User:{CONTROLLER_PRINCIPAL}",
                "allow.everyone.if.no.acl.found": "false",
            })
        return props

    def format_args(self) -> list[str]:
        return [arg for name, password in self.users.items()
                for arg in ("--add-scram", f"SCRAM-SHA-256=[name={name},password={password}]")]

    def client_kwargs(self) -> dict[str, str]:
        return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256",
                "sasl_plain_username": self.admin,
                "sasl_plain_password": self.users[self.admin]}


def read_users(path: Path) -> dict[str, str]:
    """SASL/SCRAM users from a file of `name=password` lines (`#` comments, blank lines).

    A file, not arguments or variables: passwords stay out of `ps`, shell history and logs.
    """
    users: dict[str, str] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise BrokerError(f"cannot read the users file: {exc}") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, password = (part.strip() for part in line.partition("="))
        if not sep or not name or not password:
            raise BrokerError(f"{path}:{number}: expected name=password")
        users[name] = password
    return users


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str


class LocalBroker:
    """One broker per state folder, listening on loopback only."""

    def __init__(self, state_dir: Path, port: int = 9092, heap: str = "512m",
                 security: BrokerSecurity | None = None) -> None:
        self.dir = state_dir.resolve() / "kafka"
        self.port = port
        self.controller_port = port + 1
        self.heap = heap
        self.security = security

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.dir / "broker.log"

    @property
    def _pidfile(self) -> Path:
        return self.dir / "broker.pid"

    @property
    def _props(self) -> Path:
        return self.dir / "server.properties"

    def _pid(self) -> int | None:
        """The pid of this folder's broker if it is alive (checks the command line too)."""
        try:
            pid = int(self._pidfile.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ValueError, IndexError):
            return None
        if b"kafka.Kafka" not in cmdline or str(self._props).encode() not in cmdline:
            return None
        return pid

    def status(self) -> BrokerStatus:
        pid = self._pid()
        if pid is not None:
            port = int(self._pidfile.read_text().split()[1])
            return BrokerStatus(True, pid, f"127.0.0.1:{port}")
        return BrokerStatus(False, None, self.bootstrap)

    def _write_config(self) -> None:
        data = self.dir / "data"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},"
                         f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "1",
            # Topics are created explicitly with the configured partition count; an
            # auto-created topic would silently break co-partitioning.
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.hours": "168",
            "log.segment.bytes": str(64 * 1024 * 1024),
        }
        if self.security is not None:
            scheme = "SASL_PLAINTEXT"
            props["listeners"] = (f"{scheme}://127.0.0.1:{self.port},"
                                  f"CONTROLLER://127.0.0.1:{self.controller_port}")
            props["advertised.listeners"] = f"{scheme}://127.0.0.1:{self.port}"
            props.update(self.security.props())
        self._props.touch()
        self._props.chmod(0o600)  # it holds passwords when security is on
        self._props.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def _format(self, libs: Path) -> None:
        id_file = self.dir / "cluster.id"
        if not id_file.exists():
            id_file.write_text(_kafka_uuid())
        cmd = [*self._java(libs), "kafka.tools.StorageTool", "format",
               f"--cluster-id={id_file.read_text().strip()}", "--config", str(self._props),
               "--ignore-formatted",
               *(self.security.format_args() if self.security else [])]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BrokerError(f"formatting {self.dir / 'data'} failed:\n{result.stderr}")

    def _java(self, libs: Path) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise BrokerError("java is not on PATH; install Java 17+ (openjdk-17-jre)")
        return [java, f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={LOG4J}", "-cp", f"{libs}/*"]

    def _keep_security(self) -> str:
        """Refuse a start with less security than the folder had, or SCRAM users added late.

        Users are stored only when the data folder is formatted, so security is chosen at the
        first start; a later start without it would open the same data to anyone.
        """
        levels = ("none", "scram", "scram+acls")
        wanted = ("none" if self.security is None
                  else "scram" if self.security.acls is None else "scram+acls")
        marker = self.dir / "security"
        if marker.exists():
            had = marker.read_text().strip()
        else:
            had = "none" if (self.dir / "data").exists() else wanted
        if levels.index(wanted) < levels.index(had):
            raise BrokerError(f"{self.dir} was started with security {had}: start it with the "
                              "same (--users-file, and --acls if it had ACLs)")
        if had == "none" and wanted != "none":
            raise BrokerError(f"{self.dir} was created without users; SASL users can only be "
                              "added to a new state folder")
        return wanted

    def start(self, timeout_s: float = 90.0) -> tuple[BrokerStatus, bool]:
        """Start the broker unless it runs; return its status and whether it was started."""
        current = self.status()
        if current.running:
            return current, False
        security = self._keep_security()
        libs = resolve_jars()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._format(libs)
        (self.dir / "security").write_text(security)
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(
                [*self._java(libs), "kafka.Kafka", str(self._props)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.dir, start_new_session=True,
            )
        self._pidfile.write_text(f"{proc.pid} {self.port}\n")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(f"broker exited with {proc.returncode}:\n{self._log_tail()}")
            probe = self.security.client_kwargs() if self.security else {}
            if asyncio.run(_metadata_ok(self.bootstrap, probe)):
                if self.security is not None and self.security.acls is not None:
                    self.grant()
                return self.status(), True
            time.sleep(0.3)
        self.stop()
        raise BrokerError(f"broker not ready after {timeout_s:.0f}s:\n{self._log_tail()}")

    def grant(self) -> int:
        """Create the security's ACLs as the admin on the running broker; return how many.

        The broker keeps them in its metadata log across restarts; granting again is harmless.
        """
        status = self.status()
        if self.security is None or self.security.acls is None:
            raise BrokerError("no ACLs to grant: security with ACLs is off")
        if not status.running:
            raise BrokerError("the broker is not running")
        client = {"bootstrap_servers": status.bootstrap, **self.security.client_kwargs()}
        try:
            return asyncio.run(create_acls(client, self.security.acls))
        except AclError as exc:  # the broker runs, denying all but its super users
            raise BrokerError(str(exc)) from exc

    def stop(self, timeout_s: float = 60.0) -> bool:
        """Controlled shutdown by SIGTERM (SIGKILL after the timeout); False if not running."""
        pid = self._pid()
        if pid is None:
            self._pidfile.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while self._pid() is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        if self._pid() is not None:
            os.kill(pid, signal.SIGKILL)
            while self._pid() is not None:
                time.sleep(0.1)
        self._pidfile.unlink(missing_ok=True)
        return True

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def _kafka_uuid() -> str:
    """A random cluster id in Kafka's form: URL-safe base64 of 16 bytes, no padding."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


async def _metadata_ok(bootstrap: str, client: dict[str, str]) -> bool:
    """True once a client metadata call succeeds; the log line alone is not enough."""
    import logging
    import socket

    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    host, _, port = bootstrap.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000, **client)
    try:
        await admin.start()
        await admin.list_topics()
    except (KafkaError, OSError):
        return False
    finally:
        await admin.close()
    return True


def free_port(span: int = 1) -> int:
    """A port free now, with the `span - 1` ports after it free too (a broker takes two)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        try:
            for extra in range(1, span):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port + extra))
        except OSError:
            continue
        return port
    raise OSError(f"no {span} free ports in a row")
