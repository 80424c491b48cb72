"""The `factory-pulse` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka.errors import KafkaConnectionError

from core.kafka import TopicLayoutError
from core.settings import DEFAULT_BOOTSTRAP, ConfigError, load_settings

if TYPE_CHECKING:
    from streams.acls import Acl
    from streams.broker import LocalBroker


def _default_port() -> int:
    bootstrap = os.environ.get("FACTORY_KAFKA_BOOTSTRAP", DEFAULT_BOOTSTRAP)
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    if host in ("localhost", "127.0.0.1") and port.isdigit():
        return int(port)
    return 9092


def _broker(args: argparse.Namespace) -> int:
    from streams.acls import describe
    from streams.broker import (
        CONTROLLER_PRINCIPAL,
        BrokerError,
        BrokerSecurity,
        LocalBroker,
        read_users,
    )

    try:
        acls = _broker_acls(args) if args.acls or args.action == "acls" else None
        security = None
        if args.users_file:
            security = BrokerSecurity(read_users(Path(args.users_file)), admin=args.admin,
                                      acls=tuple(acls) if acls is not None else None)
        elif args.acls or args.apply:
            raise BrokerError("ACLs need SASL users: give --users-file")
        broker = LocalBroker(Path(args.state_dir), port=args.port, heap=args.heap,
                             security=security)
        if args.action == "start":
            return _broker_start(broker)
        if args.action == "acls":
            assert acls is not None
            if args.apply:
                broker.grant()
            print(f"super users: User:{args.admin}, User:{CONTROLLER_PRINCIPAL} (the broker)")
            print("\n".join(describe(acls)))
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


def _broker_start(broker: LocalBroker) -> int:
    from streams.broker import kafka_version

    began = time.monotonic()
    status, started = broker.start()
    if not started:
        print(f"Kafka broker already running on {status.bootstrap} (pid {status.pid})")
    else:
        print(f"Kafka {kafka_version()} broker started on {status.bootstrap} "
              f"(pid {status.pid}) in {time.monotonic() - began:.1f}s; log: {broker.log_path}")
    if started and broker.security is not None and broker.security.acls is not None:
        print(f"authorizer on: {len(broker.security.acls)} ACLs granted "
              "(`factory-pulse broker acls` lists them)")
    print(f"FACTORY_KAFKA_BOOTSTRAP={status.bootstrap}")
    if broker.security is not None:
        print("FACTORY_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT")
        print("FACTORY_KAFKA_SASL_MECHANISM=SCRAM-SHA-256")
    return 0


def _broker_acls(args: argparse.Namespace) -> list[Acl]:
    """The deployment's ACLs; prefix and app id are the worker's settings unless given."""
    from streams.acls import Roles, deployment_acls

    flags = {"FACTORY_TOPIC_PREFIX": args.prefix, "FACTORY_APP_ID": args.app_id}
    settings = load_settings({**os.environ, **{k: v for k, v in flags.items() if v}})
    roles = Roles(worker=args.worker, producers=tuple(args.producer or ["producer"]),
                  viewers=tuple(args.viewer or ["viewer"]))
    return deployment_acls(settings.topic_prefix, settings.app_id, roles, settings.sources)


# The cyclic collector's youngest generation is scanned every 300,000 net allocations, not
# CPython's 700. A flush allocates a few objects per event by the thousand (decoded JSON,
# columns, table values), nearly none of them in cycles, so the default made the collector
# scan each flush's live objects dozens of times over: 20-30 % of a worker's time
# (`bench/peer.py`: one-event messages 19.3k -> 25.4k ev/s, 500-event messages 54k -> 77k,
# at 50,000). The count is net: a flush's objects are freed when it ends, so a threshold
# above what one flush holds alive (10,000 one-event messages: about 120,000) is never
# reached by them at all; at 50,000 the collector still took 11 % of a worker reading
# one-event messages (py-spy --native). 300,000 against 50,000, same topics, 4 rounds:
# CPU per event 27.0 -> 25.6 µs (one event a message), 12.6 -> 11.9 µs (500 a message).
# Cycles are still collected; they just wait a little longer.
GC_THRESHOLDS = (300_000, 20, 100)


def _worker(args: argparse.Namespace) -> int:
    from core.faust_internals import worker_class
    from core.kafka import ensure_topics
    from streams.app import create_app

    settings = load_settings()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    with _quiet_client():  # a topic layout error or a missing broker: one line (`main`)
        loop.run_until_complete(ensure_topics(settings))
    # The local stores are kept after any stop, clean or not: they are written only once
    # the changelog has their records, so Faust replays just the changelog's tail.
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    pulse = create_app(settings)
    gc.set_threshold(*GC_THRESHOLDS)
    _calm_startup_noise()
    worker = worker_class()(pulse.app, loglevel=args.loglevel, loop=loop)
    worker.execute_from_commandline()
    return 0


def _collect(args: argparse.Namespace) -> int:
    from core.kafka import ensure_topics
    from streams.collector import collect
    from streams.dcgm import collect as collect_dcgm

    settings = load_settings()
    with _quiet_client():
        asyncio.run(ensure_topics(settings))
    sent = 0
    with contextlib.suppress(KeyboardInterrupt):
        sent = asyncio.run(
            collect_dcgm(settings, args.dcgm, args.interval, args.count) if args.dcgm else
            collect(settings, args.interval, args.model, args.host, args.count))
    print(f"published {sent:,} telemetry samples to {settings.topic_prefix}telemetry")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from core.kafka import ensure_topics
    from streams.simulator import Drift, read_log, replay, simulate

    settings = load_settings()
    with _quiet_client():
        asyncio.run(ensure_topics(settings))
    try:
        if args.replay:
            sent = asyncio.run(replay(settings, read_log(Path(args.replay)), args.speed,
                                      progress=not args.quiet))
        else:
            drift = Drift(args.drift_at, args.drift_kind, args.drift_size)
            with open(args.record, "wb") if args.record else _no_file() as record:
                sent = asyncio.run(simulate(settings, args.rate, args.duration or None,
                                            args.seed, drift, record, progress=not args.quiet,
                                            kserve_topic=args.kserve))
    except KeyboardInterrupt:
        return 0
    print(f"sent {sent:,} events")
    return 0


def _no_file() -> Any:
    import contextlib

    return contextlib.nullcontext(None)


def _demo(args: argparse.Namespace) -> int:
    from streams.broker import BrokerError
    from streams.demo import run_demo

    try:
        return run_demo(_default_port(), args.rate, args.drift_at, kserve=args.kserve,
                        alertmanager=args.alertmanager)
    except BrokerError as exc:
        print(f"factory-pulse demo: {exc}", file=sys.stderr)
        return 1


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` shows each option's default, unless it has none or its help says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="factory-pulse",
        description="Real-time efficiency metrics for AI factories.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    broker = sub.add_parser("broker", formatter_class=_Help,
                            help="start/stop a local single-node Kafka (KRaft)")
    broker.add_argument("action", choices=("start", "stop", "status", "acls"),
                        help="acls: print the ACLs of a deployment (--apply: create them)")
    broker.add_argument("--port", type=int, default=_default_port(),
                        help="client port; the controller uses port+1 (default: from "
                             "FACTORY_KAFKA_BOOTSTRAP, else 9092)")
    broker.add_argument("--state-dir", default=os.environ.get("FACTORY_STATE_DIR", ".factory"),
                        help="folder for the broker's data, config and log")
    broker.add_argument("--heap", default="512m", help="JVM heap (default 512m)")
    secured = broker.add_argument_group(
        "security", "SASL/SCRAM users are stored when a state folder is first started")
    secured.add_argument("--users-file", help="name=password lines: SASL/SCRAM-only listener")
    secured.add_argument("--admin", default="admin",
                         help="the super user among them (default admin)")
    secured.add_argument("--acls", action="store_true",
                         help="with start: deny all but the ACLs of the deployment below")
    secured.add_argument("--apply", action="store_true",
                         help="with acls: create them on the running broker as the admin")
    secured.add_argument("--prefix", help="topic prefix (default: FACTORY_TOPIC_PREFIX)")
    secured.add_argument("--app-id", help="the worker's app id (default: FACTORY_APP_ID)")
    secured.add_argument("--worker", default="pulse", help="the worker's user (default pulse)")
    secured.add_argument("--producer", action="append",
                         help="a producer's user, repeatable (default producer)")
    secured.add_argument("--viewer", action="append",
                         help="a viewer's user, repeatable (default viewer); its consumer "
                              "groups must be named <viewer>-...")
    broker.set_defaults(run=_broker)

    worker = sub.add_parser("worker", formatter_class=_Help,
                            help="run the Faust worker (agents, tables, HTTP)")
    worker.add_argument("--loglevel", default="info",
                        choices=("debug", "info", "warning", "error"))
    worker.set_defaults(run=_worker)

    collect = sub.add_parser("collect", formatter_class=_Help,
                             help="publish GPU (NVML) and CPU telemetry")
    collect.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    collect.add_argument("--model", help="the model this host serves (tags every sample)")
    collect.add_argument("--host", help="host name to report (default: this host's)")
    collect.add_argument("--count", type=int, help="stop after this many rounds")
    collect.add_argument("--dcgm", metavar="URL",
                         help="read GPUs from NVIDIA dcgm-exporter's Prometheus endpoint "
                              "(e.g. http://node:9400/metrics) instead of NVML and /proc")
    collect.set_defaults(run=_collect)

    simulate = sub.add_parser("simulate", formatter_class=_Help,
                              help="run a synthetic AI factory (or replay a log)")
    simulate.add_argument("--rate", type=float, default=200.0, help="predictions per second")
    simulate.add_argument("--duration", type=float, default=0.0, help="seconds (0: forever)")
    simulate.add_argument("--seed", type=int, default=1, help="random seed of the factory")
    simulate.add_argument("--drift-at", type=float, help="seconds after start to inject drift")
    simulate.add_argument("--drift-kind", choices=("score", "feature", "concept"),
                          default="concept", help="what the injected drift changes")
    simulate.add_argument("--drift-size", type=float, default=0.3,
                          help="how strong the injected drift is")
    simulate.add_argument("--record", help="also write the events to this JSONL file")
    simulate.add_argument("--replay", help="publish this recorded JSONL log instead")
    simulate.add_argument("--speed", type=float, default=1.0,
                          help="replay pace: 1 = as recorded, 10 = ten times faster, 0 = max")
    simulate.add_argument("--kserve", metavar="TOPIC",
                          help="send predictions to TOPIC as KServe's inference logger logs "
                               "them (CloudEvents, binary mode), for a [[sources]] entry")
    simulate.add_argument("--quiet", action="store_true", help="no progress bar")
    simulate.set_defaults(run=_simulate)

    demo = sub.add_parser("demo", formatter_class=_Help,
                          help="broker, worker, collector and simulator together")
    demo.add_argument("--rate", type=float, default=200.0,
                      help="predictions per second the simulator sends")
    demo.add_argument("--drift-at", type=float, default=120.0,
                      help="seconds until the simulator injects concept drift")
    demo.add_argument("--kserve", action="store_true",
                      help="the simulator's predictions go through KServe's inference-logger "
                           "format and the worker's KServe source")
    demo.add_argument("--alertmanager", action="store_true",
                      help="also run a local Prometheus Alertmanager and push alerts to it")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ConfigError as exc:
        print(f"factory-pulse: {exc}", file=sys.stderr)
        return 2
    except TopicLayoutError as exc:
        print(f"factory-pulse {args.command}: {exc}", file=sys.stderr)
        return 2
    except KafkaConnectionError:
        print(f"factory-pulse {args.command}: no Kafka broker answers at {_bootstrap()} "
              "(FACTORY_KAFKA_BOOTSTRAP or kafka.bootstrap); start one with "
              "`factory-pulse broker start`", file=sys.stderr)
        return 1
    return code


@contextlib.contextmanager
def _quiet_client() -> Iterator[None]:
    """Keep aiokafka's own connection errors off the terminal while the command checks for a
    broker: a missing one is reported in one line by `main`."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class _Retrying(logging.Filter):
    """aiokafka logs a group coordinator that is not ready yet as an ERROR, and retries: on a
    fresh broker (the demo, a first start) that is every start. Said as what it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and str(record.msg).startswith(
                "Group Coordinator Request failed") and any(
                getattr(arg, "retriable", False) for arg in record.args or ()):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg = "group coordinator not ready yet (%s); retrying"
        return True


def _calm_startup_noise() -> None:
    logging.getLogger("aiokafka.consumer.group_coordinator").addFilter(_Retrying())


def _bootstrap() -> str:
    try:
        return load_settings().bootstrap
    except ConfigError:
        return os.environ.get("FACTORY_KAFKA_BOOTSTRAP") or DEFAULT_BOOTSTRAP


if __name__ == "__main__":
    sys.exit(main())
