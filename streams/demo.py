"""`factory-pulse demo`: the local broker and every service process, stopped together on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from streams.broker import LocalBroker
from streams.settings import Settings


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "streams.cli", *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def run_demo(settings: Settings, port: int, services: list[list[str]]) -> int:
    """Start the broker (unless running), then each service; stop what we started on exit."""
    broker = LocalBroker(settings.state_dir, port=port)
    status, started_broker = broker.start()
    env = {**os.environ, "FACTORY_KAFKA_BOOTSTRAP": status.bootstrap}
    logs = settings.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = {args[0]: _spawn(args, env, logs / f"{args[0]}.log") for args in services}
    print(f"broker: {status.bootstrap} ({'started' if started_broker else 'already running'})")
    for name in procs:
        print(f"{name}: running, log {logs / (name + '.log')}")
    print(f"dashboard: http://{settings.web_host}:{settings.web_port}/")
    print("Ctrl-C stops everything.", flush=True)
    interrupted = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal interrupted
        interrupted = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    code = 0
    try:
        while not interrupted:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    print(f"{name} exited with {proc.returncode}; see its log", file=sys.stderr)
                    code = 1
                    interrupted = True
            time.sleep(0.5)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if started_broker:
            broker.stop()
        print("stopped")
    return code
