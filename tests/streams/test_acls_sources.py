"""ACLs of a deployment with `[[sources]]` and webhooks: the worker reads the other systems'
topics, writes only the predictions it maps from them, and uses its own consumer groups."""

from __future__ import annotations

from core.settings import Source
from streams.acls import Acl, Operation, Pattern, Resource, Roles, deployment_acls

APP = "pulse-app"
SOURCES = (Source(name="iris", kind="kserve", topic="knative-broker-default"),
           Source(name="m", kind="seldon", topic="seldon.mesh.model.m"))


def allowed(acls: list[Acl], who: str, op: Operation, kind: Resource, name: str) -> bool:
    return any(a.principal == who and a.operation == op and a.resource == kind
               and (name == a.name if a.pattern is Pattern.LITERAL else name.startswith(a.name))
               for a in acls)


def test_the_worker_reads_source_topics_and_writes_predictions_only_with_sources() -> None:
    acls = deployment_acls("plant.", APP, Roles(), SOURCES)
    for topic in ("knative-broker-default", "seldon.mesh.model.m.inputs",
                  "seldon.mesh.model.m.outputs"):
        assert allowed(acls, "pulse", Operation.READ, Resource.TOPIC, topic)
        assert not allowed(acls, "pulse", Operation.WRITE, Resource.TOPIC, topic)
    assert allowed(acls, "pulse", Operation.WRITE, Resource.TOPIC, "plant.predictions")
    assert not allowed(acls, "pulse", Operation.WRITE, Resource.TOPIC, "plant.labels")
    plain = deployment_acls("plant.", APP, Roles())
    assert not allowed(plain, "pulse", Operation.WRITE, Resource.TOPIC, "plant.predictions")


def test_the_worker_has_its_webhook_and_source_groups() -> None:
    acls = deployment_acls("plant.", APP, Roles())
    for group in (APP, f"{APP}-webhooks", f"{APP}-source-iris", f"{APP}-source-iris-in"):
        assert allowed(acls, "pulse", Operation.READ, Resource.GROUP, group)
        assert not allowed(acls, "producer", Operation.READ, Resource.GROUP, group)
        assert not allowed(acls, "viewer", Operation.READ, Resource.GROUP, group)
