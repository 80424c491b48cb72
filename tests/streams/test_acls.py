"""The deployment's ACLs, checked the way Kafka's authorizer matches them (no broker needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.topics import SNAPSHOT_TABLE, Topics, internal_topics, shard_table
from streams.acls import Acl, Operation, Pattern, Resource, Roles, deployment_acls, describe
from streams.broker import CONTROLLER_PRINCIPAL, BrokerError, BrokerSecurity, read_users

PREFIX, APP = "plant.", "pulse-app"
ROLES = Roles(worker="pulse", producers=("producer", "trainer"), viewers=("viewer",))
ACLS = deployment_acls(PREFIX, APP, ROLES)
TOPICS = Topics(PREFIX)
INTERNAL = [*internal_topics(APP, 1), f"{APP}-{shard_table('predictions')}-changelog",
            f"{APP}-{SNAPSHOT_TABLE}-changelog", f"{APP}-__assignor-__leader"]


def allowed(who: str, op: Operation, kind: Resource, name: str) -> bool:
    """StandardAuthorizer's answer with only ALLOW rules and no ACL-less fallback."""
    return any(a.principal == who and a.operation == op and a.resource == kind
               and (name == a.name if a.pattern is Pattern.LITERAL else name.startswith(a.name))
               for a in ACLS)


@pytest.mark.parametrize("topic", [*TOPICS.outputs.values(), *INTERNAL])
def test_only_the_worker_writes_outputs_partials_and_changelogs(topic: str) -> None:
    assert allowed("pulse", Operation.WRITE, Resource.TOPIC, topic)
    for other in (*ROLES.producers, *ROLES.viewers):
        assert not allowed(other, Operation.WRITE, Resource.TOPIC, topic)
        readable = topic in TOPICS.outputs.values() and other in ROLES.viewers
        assert allowed(other, Operation.READ, Resource.TOPIC, topic) == readable


@pytest.mark.parametrize("topic", TOPICS.inputs.values())
def test_producers_write_inputs_the_worker_reads_them(topic: str) -> None:
    for producer in ROLES.producers:
        assert allowed(producer, Operation.WRITE, Resource.TOPIC, topic)
        assert not allowed(producer, Operation.READ, Resource.TOPIC, topic)
    assert allowed("pulse", Operation.READ, Resource.TOPIC, topic)
    assert not allowed("pulse", Operation.WRITE, Resource.TOPIC, topic)
    assert not allowed("viewer", Operation.READ, Resource.TOPIC, topic)


def test_groups_are_kept_apart_and_other_deployments_are_out_of_reach() -> None:
    assert allowed("pulse", Operation.READ, Resource.GROUP, APP)
    assert allowed("viewer", Operation.READ, Resource.GROUP, "viewer-dashboard")
    assert not allowed("viewer", Operation.READ, Resource.GROUP, APP)
    assert not any(allowed(p, Operation.READ, Resource.GROUP, APP) for p in ROLES.producers)
    other = Topics("other.")
    for topic in [*other.all(), *internal_topics("other-app", 1)]:
        assert not any(allowed(a.principal, a.operation, Resource.TOPIC, topic) for a in ACLS)


def test_acls_are_unique_and_described_one_line_per_resource() -> None:
    assert len(set(ACLS)) == len(ACLS)
    lines = describe(ACLS)
    assert len(lines) == len({(a.principal, a.resource, a.name) for a in ACLS})
    assert any(line.startswith("User:pulse") and f"topic {APP}-*" in line
               and "WRITE" in line for line in lines)


def test_the_security_config_denies_all_but_the_super_users_once_acls_are_on() -> None:
    users = {"admin": "a", "pulse": "p"}
    plain = BrokerSecurity(users).props()
    assert "authorizer.class.name" not in plain
    props = BrokerSecurity(users, acls=(Acl("pulse", Resource.GROUP, APP, Pattern.LITERAL,
                                            Operation.READ),)).props()
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == f"User:admin;User:{CONTROLLER_PRINCIPAL}"
    # no listener lets an unauthenticated client in as ANONYMOUS
    assert "PLAINTEXT:PLAINTEXT" not in props["listener.security.protocol.map"].replace(
        "SASL_PLAINTEXT", "")
    assert BrokerSecurity(users).props()["listener.name.controller.plain.sasl.jaas.config"] \
        != plain["listener.name.controller.plain.sasl.jaas.config"]  # a new password each start
    with pytest.raises(BrokerError, match="broker's own principal"):
        BrokerSecurity({**users, CONTROLLER_PRINCIPAL: "x"})


def test_users_file(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text("# who\nadmin=s3cret=with=equals\n\n pulse = p w \n")
    assert read_users(path) == {"admin": "s3cret=with=equals", "pulse": "p w"}
    path.write_text("viewer\n")
    with pytest.raises(BrokerError, match="users:1: expected name=password"):
        read_users(path)
