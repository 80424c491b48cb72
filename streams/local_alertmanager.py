"""A real Prometheus Alertmanager on loopback, for tests and `factory-pulse demo --alertmanager`.

The binary is built once from its Go module with the Go toolchain (modules from the Go proxy)
and cached like the Kafka jars, under
`~/.cache/factory-pulse/alertmanager-<version>/`, so a fresh machine's `make test` gets it on
first use and every later run finds it there. Each instance runs with its own folder for its
config, data and log, and without clustering (a single node needs no gossip port).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from streams.broker import free_port

VERSION = "0.35.0"
MODULE_ROOT = "github.com/prometheus/alertmanager"
PLACEHOLDER_PAGE = "<!doctype html><title>Alertmanager</title><p>API only: /api/v2/</p>\n"

# Routes every alert to one webhook receiver that goes nowhere: the API keeps the alerts it is
# sent, which is all the tests and the demo look at. `group_wait` is short so a test sees the
# grouping at once.
DEFAULT_CONFIG = """\
route:
  receiver: "null"
  group_by: [alertname, model]
  group_wait: 1s
  group_interval: 5s
  repeat_interval: 1h
receivers:
  - name: "null"
"""


class AlertmanagerError(RuntimeError):
    """The local Alertmanager could not be built, started or stopped."""


def binary_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "factory-pulse" / f"alertmanager-{VERSION}"


def resolve_binary() -> Path:
    """Build the pinned Alertmanager with `go install` once; return the binary's path."""
    target = binary_dir()
    binary = target / "alertmanager"
    marker = target / ".complete"
    if marker.exists() and binary.exists():
        return binary
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists()
                                else None)
    if go is None:
        raise AlertmanagerError("the Go toolchain (go) is not on PATH; it builds Alertmanager")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    # `go install module@version` cannot build it: the web UI's assets (ui/app/dist) are made
    # by npm at release time and are not in the module, yet the binary embeds them. The module
    # source is copied and built with a placeholder page instead; the API is unchanged.
    downloaded = _go(go, ["mod", "download", "-json", f"{MODULE_ROOT}@v{VERSION}"], env, None)
    source = partial / "src"
    shutil.copytree(json.loads(downloaded)["Dir"], source)
    for part in (source, *source.rglob("*")):
        part.chmod(0o755 if part.is_dir() else 0o644)  # the module cache is read-only
    for ui in ("elm", "mantine"):
        (source / "ui" / "app" / "dist" / ui).mkdir(parents=True, exist_ok=True)
        (source / "ui" / "app" / "dist" / ui / "index.html").write_text(PLACEHOLDER_PAGE)
    stamp = f"-X github.com/prometheus/common/version.Version={VERSION}"
    _go(go, ["build", "-trimpath", f"-ldflags={stamp}", "-o", str(partial / "alertmanager"),
             "./cmd/alertmanager"], env, source)
    shutil.rmtree(source)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    marker.write_text(VERSION)
    return binary


def _go(go: str, args: list[str], env: dict[str, str], cwd: Path | None) -> str:
    result = subprocess.run([go, *args], env=env, cwd=cwd, capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise AlertmanagerError(f"go {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


class LocalAlertmanager:
    """One Alertmanager process with its folder; `start` waits until its API answers."""

    def __init__(self, folder: Path, port: int | None = None,
                 config: str = DEFAULT_CONFIG) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.folder / "alertmanager.log"

    def start(self, timeout_s: float = 30.0) -> LocalAlertmanager:
        binary = resolve_binary()
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "alertmanager.yml"
        config.write_text(self.config)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(binary), f"--config.file={config}",
                 f"--storage.path={self.folder / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 "--cluster.listen-address="],  # a single node: no gossip
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AlertmanagerError(f"alertmanager exited {self.proc.returncode}: "
                                        f"{self.log_path.read_text(errors='replace')[-2000:]}")
            if self._ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise AlertmanagerError(f"alertmanager did not answer on {self.url} in {timeout_s:g}s")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:  # noqa: S310
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
