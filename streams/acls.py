"""Who may do what on a secured broker: the ACLs of one deployment (topic prefix and app id).

Authentication alone lets every logged-in client write every topic, so a producer could forge
the worker's partials, a snapshot in its changelog or an alert. The grants follow the data:
producers write the inputs, the worker reads them and owns everything named after its app id
plus the outputs, viewers read the outputs. Kafka's StandardAuthorizer with
`allow.everyone.if.no.acl.found=false` denies whatever is not listed here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from core.settings import Source
from core.topics import Topics, external_topics, internal_topics


class Resource(IntEnum):
    """Kafka's resource type codes (org.apache.kafka.common.resource.ResourceType)."""

    TOPIC = 2
    GROUP = 3


class Pattern(IntEnum):
    """Kafka's resource pattern type codes (PatternType)."""

    LITERAL = 3
    PREFIXED = 4


class Operation(IntEnum):
    """Kafka's ACL operation codes (AclOperation)."""

    READ = 3
    WRITE = 4
    CREATE = 5
    DESCRIBE = 8


_ALLOW = 3  # AclPermissionType.ALLOW: only grants are made, everything else is denied
_ANY_HOST = "*"


@dataclass(frozen=True, slots=True, order=True)
class Acl:
    """One grant: `principal` may do `operation` on a resource (or resources by prefix)."""

    principal: str
    resource: Resource
    name: str
    pattern: Pattern
    operation: Operation



@dataclass(frozen=True, slots=True)
class Roles:
    """The principals (SASL user names) of one deployment."""

    worker: str = "pulse"
    producers: tuple[str, ...] = ("producer",)
    viewers: tuple[str, ...] = ("viewer",)


def viewer_group_prefix(viewer: str) -> str:
    """Viewers commit offsets under consumer groups named `<viewer>-...`, never the worker's."""
    return f"{viewer}-"


def deployment_acls(prefix: str, app_id: str, roles: Roles, sources: Sequence[Source] = (),
                    ) -> list[Acl]:
    """Every grant one deployment needs; sorted, without duplicates."""
    topics = Topics(prefix)
    inputs = list(topics.inputs.values())
    outputs = list(topics.outputs.values())
    acls: set[Acl] = set()

    def grant(who: str, kind: Resource, names: Iterable[str], pattern: Pattern,
              *ops: Operation) -> None:
        acls.update(Acl(who, kind, n, pattern, op) for n in names for op in ops)

    read, write, create, describe = (Operation.READ, Operation.WRITE, Operation.CREATE,
                                     Operation.DESCRIBE)
    worker = roles.worker
    # The worker creates the whole layout before it joins (core.kafka.ensure_topics) and
    # Faust creates its changelogs and its `__assignor-__leader` topic, all named `<app_id>-`.
    grant(worker, Resource.TOPIC, [f"{app_id}-"], Pattern.PREFIXED,
          read, write, create, describe)
    grant(worker, Resource.TOPIC, outputs, Pattern.LITERAL, read, write, create, describe)
    grant(worker, Resource.TOPIC, inputs, Pattern.LITERAL, read, create, describe)
    grant(worker, Resource.GROUP, [app_id], Pattern.LITERAL, read, describe)
    # its own groups beside the app's: `<app_id>-webhooks`, `<app_id>-source-<name>[-in]`
    grant(worker, Resource.GROUP, [f"{app_id}-"], Pattern.PREFIXED, read, describe)
    if sources:  # it reads other systems' topics and writes the predictions it maps
        grant(worker, Resource.TOPIC, [t for s in sources for t in external_topics(s)],
              Pattern.LITERAL, read, create, describe)
        grant(worker, Resource.TOPIC, [topics.name("predictions")], Pattern.LITERAL, write)
    for producer in roles.producers:
        grant(producer, Resource.TOPIC, inputs, Pattern.LITERAL, write, describe)
        # Describing (not reading) the rest lets the tools' topic check see the layout
        # complete instead of trying, and failing, to create it.
        grant(producer, Resource.TOPIC, [*outputs, *internal_topics(app_id, 1)],
              Pattern.LITERAL, describe)
    for viewer in roles.viewers:
        grant(viewer, Resource.TOPIC, outputs, Pattern.LITERAL, read, describe)
        grant(viewer, Resource.GROUP, [viewer_group_prefix(viewer)], Pattern.PREFIXED,
              read, describe)
    return sorted(acls)


def describe(acls: Iterable[Acl]) -> list[str]:
    """One line per principal and resource with its operations, for people to check."""
    ops: dict[tuple[str, Resource, str, Pattern], list[str]] = {}
    for acl in sorted(acls):
        ops.setdefault((acl.principal, acl.resource, acl.name, acl.pattern), []).append(
            acl.operation.name)
    return [f"User:{who:<10} {kind.name.lower():<5} "
            f"{name + ('*' if pattern is Pattern.PREFIXED else ''):<28} {','.join(names)}"
            for (who, kind, name, pattern), names in ops.items()]


class AclError(RuntimeError):
    """The broker refused to create an ACL."""


async def create_acls(client: dict[str, Any], acls: Iterable[Acl]) -> int:
    """Create the ACLs through a client logged in as a super user; return how many.

    aiokafka 0.14 has no `create_acls` in its admin client, so this sends Kafka's CreateAcls
    request with aiokafka's own protocol class (one ACL a request; it negotiates v1, the
    oldest that Kafka 4 accepts). An ACL that exists already is accepted again, so running
    this twice is harmless.
    """
    from aiokafka.client import AIOKafkaClient
    from aiokafka.protocol.admin import CreateAclsRequest

    kafka = AIOKafkaClient(**client)
    await kafka.bootstrap()
    failed, count = [], 0
    try:
        for acl in acls:
            request = CreateAclsRequest(acl.resource, acl.name, acl.pattern,
                                        f"User:{acl.principal}", _ANY_HOST, acl.operation,
                                        _ALLOW)
            response = await kafka.send(kafka.get_random_node(), request)
            failed += [f"{describe([acl])[0]}: {message or code}"
                       for code, message in response.creation_responses if code]
            count += 1
    finally:
        await kafka.close()
    if failed:
        raise AclError("the broker refused ACLs: " + "; ".join(failed))
    return count
