"""Kafka client wiring shared by the worker, the tools and the tests.

Security settings reach every client from here, so SASL/TLS configured once in the environment
applies to Faust, to plain aiokafka producers and consumers, and to topic administration alike.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.helpers import create_ssl_context

from core.settings import Settings
from core.topics import Topics, external_topics, internal_topics, source_topic

_TOPIC_ALREADY_EXISTS = 36
_TOPIC_AUTHORIZATION_FAILED = 29


class TopicLayoutError(RuntimeError):
    """The topics cannot be laid out as the settings say: an existing topic's partition
    count breaks co-partitioning of inputs and tables, or a topic cannot be created."""


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    sec = settings.security
    if not sec.protocol.endswith("SSL"):
        return None
    context: ssl.SSLContext = create_ssl_context(
        cafile=sec.ssl_cafile, certfile=sec.ssl_certfile, keyfile=sec.ssl_keyfile
    )
    return context


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, consumer, admin)."""
    sec = settings.security
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": sec.protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if sec.protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = sec.sasl_mechanism
        kwargs["sasl_plain_username"] = sec.sasl_username
        kwargs["sasl_plain_password"] = sec.sasl_password
    return kwargs


def faust_credentials(settings: Settings) -> Any:
    """The `broker_credentials` for Faust, or None for plaintext."""
    import faust

    sec = settings.security
    if sec.protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=sec.sasl_username,
            password=sec.sasl_password,
            mechanism=sec.sasl_mechanism,
            ssl_context=ssl_context(settings),
        )
    if sec.protocol == "SSL":
        return faust.SSLCredentials(ssl_context(settings))
    return None


async def ensure_topics(settings: Settings) -> list[str]:
    """Create the service's topics if missing; return the names created.

    Faust only creates its changelogs, and a source topic missing when the group assigns
    partitions is silently skipped, so the worker creates every input, output and internal
    topic before it joins. Input topics must all have the configured partition count:
    tables are co-partitioned with them.
    """
    topics = Topics(settings.topic_prefix)
    wanted = dict.fromkeys(topics.all(), settings.partitions)
    wanted.update(internal_topics(settings.app_id, settings.partitions))
    for source in settings.sources:  # its own topics too, if their writer has not yet
        wanted.update({t: settings.partitions for t in external_topics(source) if t not in wanted})
        wanted[source_topic(settings.app_id, source.name)] = settings.partitions
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            # an oversized input must reach the worker, to be dead-lettered with its reason;
            # a forward of one event of such a size must fit too
            roomy = {*topics.inputs.values(), *internal_topics(settings.app_id, 1)}
            big = {"max.message.bytes": str(4 * settings.max_message_bytes)}
            response = await admin.create_topics([
                NewTopic(t, wanted[t], settings.replication_factor,
                         topic_configs=big if t in roomy else {}) for t in missing
            ])
            for name, code, *_ in response.topic_errors:
                if code == _TOPIC_AUTHORIZATION_FAILED:
                    raise TopicLayoutError(
                        f"topic {name} is missing and this user may not create it: start the "
                        "worker first (it creates every topic) or create them as an admin")
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    raise TopicLayoutError(f"could not create topic {name}: error code {code}")
        inputs = list(topics.inputs.values())
        for _ in range(50):  # a topic just created can show no partitions for a moment
            described_all = await admin.describe_topics(inputs)
            if all(d["partitions"] for d in described_all):
                break
            await asyncio.sleep(0.2)
        for described in described_all:
            count = len(described["partitions"])
            if count != settings.partitions:
                raise TopicLayoutError(
                    f"topic {described['topic']} has {count} partitions but "
                    f"FACTORY_PARTITIONS is {settings.partitions}: every input topic must "
                    "have the configured count (tables are co-partitioned with them)"
                )
        return missing
    finally:
        await admin.close()


async def first_offset(settings: Settings, topic: str, partition: int, offset: int,
                       timeout_s: float = 10.0) -> int | None:
    """The offset of the first record at or after `offset` (None if none came in time).

    Offsets of one partition are not always contiguous (transaction markers, compaction),
    so a delivery that jumps ahead is checked here against the log itself before anything
    counts it as the next record.
    """
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, offset)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            records = (await consumer.getmany(tp, timeout_ms=1000, max_records=1)).get(tp)
            if records:
                return int(records[0].offset)
        return None
    finally:
        await consumer.stop()
