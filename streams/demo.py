"""`factory-pulse demo`: the local broker and every service process, stopped together on Ctrl-C.

The demo uses short windows (10 s next to 60 s) so that charts move within a minute, unless
`FACTORY_CONFIG` names a configuration of the user's own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.settings import load_settings
from streams.broker import LocalBroker
from streams.kserve_logs import source_config
from streams.local_alertmanager import LocalAlertmanager

# Where `demo --kserve` writes KServe's logs: a topic of KServe's (Knative's), not ours.
KSERVE_TOPIC = "kserve-inference-logs"

DEMO_CONFIG = """\
# written by `factory-pulse demo`
regressors = ["demand"]

[windows]
sizes = ["10s", "60s"]
grace = "2s"

[worker]
idle = "5s"

[prices]
per_hour = { "NVIDIA H200" = 3.80, gpu = 2.00, cpu = 0.05 }
per_kwh = 0.12
"""


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "streams.cli", *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def run_demo(port: int, rate: float, drift_at: float, kserve: bool = False,
             alertmanager: bool = False) -> int:
    """Start the broker (unless running), then each service; stop what we started on exit.

    `kserve`: the simulator's predictions go to `KSERVE_TOPIC` as KServe's inference logger
    writes them, and the worker reads them through a `[[sources]]` entry. `alertmanager`: a
    local Alertmanager runs too, and the worker pushes its alerts there."""
    env = dict(os.environ)
    state = Path(env.get("FACTORY_STATE_DIR", ".factory"))
    state.mkdir(parents=True, exist_ok=True)
    if not env.get("FACTORY_CONFIG"):
        config = state / "demo.toml"
        config.write_text(DEMO_CONFIG + (
            "\n" + source_config("kserve", KSERVE_TOPIC) if kserve else ""))
        env["FACTORY_CONFIG"] = str(config)
    elif kserve:
        print(f"--kserve: FACTORY_CONFIG must hold a [[sources]] entry reading {KSERVE_TOPIC}:"
              f"\n{source_config('kserve', KSERVE_TOPIC)}", flush=True)
    am = LocalAlertmanager(state / "alertmanager").start() if alertmanager else None
    if am is not None:
        env["FACTORY_ALERTMANAGER_URL"] = am.url
    broker = LocalBroker(state, port=port)
    status, started_broker = broker.start()
    env["FACTORY_KAFKA_BOOTSTRAP"] = status.bootstrap
    settings = load_settings(env)
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    services = [["worker"], ["collect", "--interval", "5", "--host", "demo-host"],
                ["simulate", "--rate", str(rate), "--drift-at", str(drift_at), "--quiet",
                 *(["--kserve", KSERVE_TOPIC] if kserve else [])]]
    procs = {args[0]: _spawn(args, env, logs / f"{args[0]}.log") for args in services}
    print(f"broker: {status.bootstrap} ({'started' if started_broker else 'already running'})")
    for name in procs:
        print(f"{name}: running, log {logs / (name + '.log')}")
    print(f"dashboard: http://{settings.web_host}:{settings.web_port}/")
    if kserve:
        print(f"predictions: KServe inference logs on topic {KSERVE_TOPIC}")
    if am is not None:
        print(f"alertmanager: {am.url}/#/alerts (API {am.url}/api/v2/alerts); log {am.log_path}")
    print(f"concept drift is injected {drift_at:g}s after start; Ctrl-C stops everything.",
          flush=True)
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
        if am is not None:
            am.stop()
        if started_broker:
            broker.stop()
        print("stopped")
    return code
