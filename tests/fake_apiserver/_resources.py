"""The resource types the fake API server serves, with their discovery data."""

from __future__ import annotations

from dataclasses import dataclass, field

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
COMMON_FIELDS = frozenset({"metadata.name", "metadata.namespace"})


@dataclass(frozen=True)
class ResourceType:
    """One served resource: ``group`` is "" for the core group."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    status_subresource: bool = False
    fields: frozenset[str] = field(default=COMMON_FIELDS)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def discovery(self) -> list[dict[str, object]]:
        """APIResource entries (the resource and its subresources) for an APIResourceList."""
        entry: dict[str, object] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(ALL_VERBS),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        entries = [entry]
        if self.status_subresource:
            entries.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        return entries


_CORE_EVENT_FIELDS = COMMON_FIELDS | {
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
}

RESOURCES: tuple[ResourceType, ...] = (
    ResourceType(
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        False,
        ("ns",),
        True,
        COMMON_FIELDS | {"status.phase"},
    ),
    ResourceType("", "v1", "services", "service", "Service", True, ("svc",), True),
    ResourceType(
        "", "v1", "secrets", "secret", "Secret", True, (), False, COMMON_FIELDS | {"type"}
    ),
    ResourceType("", "v1", "events", "event", "Event", True, ("ev",), False, _CORE_EVENT_FIELDS),
    ResourceType(
        "networking.k8s.io", "v1", "ingresses", "ingress", "Ingress", True, ("ing",), True
    ),
    ResourceType(
        "networking.k8s.io", "v1", "ingressclasses", "ingressclass", "IngressClass", False
    ),
    ResourceType(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "endpointslice",
        "EndpointSlice",
        True,
        (),
        False,
        COMMON_FIELDS | {"addressType"},
    ),
    ResourceType("coordination.k8s.io", "v1", "leases", "lease", "Lease", True),
    ResourceType(
        "events.k8s.io",
        "v1",
        "events",
        "event",
        "Event",
        True,
        ("ev",),
        False,
        COMMON_FIELDS
        | {
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "reason",
            "reportingController",
            "type",
        },
    ),
)


def group_versions() -> dict[str, list[ResourceType]]:
    """group/version -> its resources, in a stable order."""
    result: dict[str, list[ResourceType]] = {}
    for resource in RESOURCES:
        result.setdefault(resource.group_version, []).append(resource)
    return result


def find(group_version: str, plural: str) -> ResourceType | None:
    for resource in RESOURCES:
        if resource.group_version == group_version and resource.plural == plural:
            return resource
    return None


def find_kind(api_version: str, kind: str) -> ResourceType | None:
    for resource in RESOURCES:
        if resource.api_version == api_version and resource.kind == kind:
            return resource
    return None
