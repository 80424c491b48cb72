"""The `factory-pulse` command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from streams.settings import DEFAULT_BOOTSTRAP, ConfigError, load_settings


def _default_port() -> int:
    bootstrap = os.environ.get("FACTORY_KAFKA_BOOTSTRAP", DEFAULT_BOOTSTRAP)
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    if host in ("localhost", "127.0.0.1") and port.isdigit():
        return int(port)
    return 9092


def _broker(args: argparse.Namespace) -> int:
    from streams.broker import BrokerError, LocalBroker, kafka_version

    broker = LocalBroker(Path(args.state_dir), port=args.port, heap=args.heap)
    try:
        if args.action == "start":
            began = time.monotonic()
            status, started = broker.start()
            if started:
                print(f"Kafka {kafka_version()} broker started on {status.bootstrap} "
                      f"(pid {status.pid}) in {time.monotonic() - began:.1f}s; "
                      f"log: {broker.log_path}")
            else:
                print(f"Kafka broker already running on {status.bootstrap} (pid {status.pid})")
            print(f"FACTORY_KAFKA_BOOTSTRAP={status.bootstrap}")
            return 0
        if args.action == "stop":
            print("Kafka broker stopped" if broker.stop() else "Kafka broker was not running")
            return 0
        status = broker.status()
        state = f"running on {status.bootstrap} (pid {status.pid})" if status.running else "stopped"
        print(f"Kafka broker {state}")
        return 0 if status.running else 3
    except BrokerError as exc:
        print(f"factory-pulse broker: {exc}", file=sys.stderr)
        return 1


def _worker(args: argparse.Namespace) -> int:
    import faust

    from streams.app import create_app
    from streams.kafka import TopicLayoutError, ensure_topics

    settings = load_settings()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(ensure_topics(settings))
    except TopicLayoutError as exc:
        print(f"factory-pulse worker: {exc}", file=sys.stderr)
        return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    pulse = create_app(settings)
    worker = faust.Worker(pulse.app, loglevel=args.loglevel, loop=loop)
    worker.execute_from_commandline()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from streams.broker import BrokerError
    from streams.demo import run_demo

    try:
        return run_demo(load_settings(), _default_port(), [["worker"]])
    except BrokerError as exc:
        print(f"factory-pulse demo: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="factory-pulse",
        description="Real-time efficiency metrics for AI factories.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    broker = sub.add_parser("broker", help="start/stop a local single-node Kafka (KRaft)")
    broker.add_argument("action", choices=("start", "stop", "status"))
    broker.add_argument("--port", type=int, default=_default_port(),
                        help="client port; the controller uses port+1 (default: from "
                             "FACTORY_KAFKA_BOOTSTRAP, else 9092)")
    broker.add_argument("--state-dir", default=os.environ.get("FACTORY_STATE_DIR", ".factory"),
                        help="folder for the broker's data, config and log")
    broker.add_argument("--heap", default="512m", help="JVM heap (default 512m)")
    broker.set_defaults(run=_broker)

    worker = sub.add_parser("worker", help="run the Faust worker (agents, tables, HTTP)")
    worker.add_argument("--loglevel", default="info",
                        choices=("debug", "info", "warning", "error"))
    worker.set_defaults(run=_worker)

    demo = sub.add_parser("demo", help="run the local broker and the services together")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ConfigError as exc:
        print(f"factory-pulse: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
