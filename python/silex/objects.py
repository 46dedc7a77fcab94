"""Typed models of the Kubernetes objects Silex reads: only the fields it needs.

Field names follow the API's camelCase on the wire (``rename="camel"``); unknown fields are
ignored. :func:`convert` builds a model from parsed YAML/JSON and raises
:class:`msgspec.ValidationError` whose message names the field path
(``Expected `str`, got `int` - at `$.spec.rules[0].host```).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Final, Literal, TypeVar

import msgspec

IS_DEFAULT_CLASS_ANNOTATION: Final = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION: Final = "kubernetes.io/ingress.class"
SERVICE_NAME_LABEL: Final = "kubernetes.io/service-name"

Kind = Literal["Ingress", "IngressClass", "Service", "EndpointSlice", "Secret"]
KINDS: Final[tuple[Kind, ...]] = ("Ingress", "IngressClass", "Service", "EndpointSlice", "Secret")
CLUSTER_SCOPED_KINDS: Final[frozenset[str]] = frozenset({"IngressClass"})


class _Model(msgspec.Struct, frozen=True, rename="camel"):
    """Base of every model: immutable, camelCase on the wire, unknown fields ignored."""


class ObjectMeta(_Model, frozen=True):
    """``metadata``: identity, labels, annotations and age."""

    name: str = ""
    namespace: str = ""
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    creation_timestamp: datetime | None = None
    uid: str = ""
    resource_version: str = ""

    @property
    def created_at(self) -> datetime | None:
        """The creation time, made timezone-aware (a naive time is taken as UTC)."""
        stamp = self.creation_timestamp
        if stamp is not None and stamp.tzinfo is None:
            return stamp.replace(tzinfo=UTC)
        return stamp


class _Object(_Model, frozen=True):
    """An API object with metadata; ``kind`` names its Kubernetes kind."""

    KIND: ClassVar[Kind]
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)

    @property
    def key(self) -> tuple[str, str]:
        """``(namespace, name)``; the namespace is ``""`` for cluster-scoped objects."""
        return (self.metadata.namespace, self.metadata.name)

    @property
    def ref(self) -> str:
        """``namespace/name``, or just ``name`` for cluster-scoped objects."""
        if self.metadata.namespace:
            return f"{self.metadata.namespace}/{self.metadata.name}"
        return self.metadata.name


# --- Ingress (networking.k8s.io/v1) -------------------------------------------------------------


class ServiceBackendPort(_Model, frozen=True):
    """``backend.service.port``: exactly one of ``number`` or ``name``."""

    number: int | None = None
    name: str | None = None


class IngressServiceBackend(_Model, frozen=True):
    """``backend.service``."""

    name: str = ""
    port: ServiceBackendPort = msgspec.field(default_factory=ServiceBackendPort)


class IngressBackend(_Model, frozen=True):
    """``backend``: a Service port (``resource`` backends are not supported)."""

    service: IngressServiceBackend | None = None
    resource: dict[str, Any] | None = None


class HTTPIngressPath(_Model, frozen=True):
    """One entry of ``rules[].http.paths``."""

    path: str | None = None
    path_type: str | None = None
    backend: IngressBackend = msgspec.field(default_factory=IngressBackend)


class HTTPIngressRuleValue(_Model, frozen=True):
    """``rules[].http``."""

    paths: list[HTTPIngressPath] = []


class IngressRule(_Model, frozen=True):
    """One entry of ``spec.rules``; no host means every host."""

    host: str | None = None
    http: HTTPIngressRuleValue | None = None


class IngressTLS(_Model, frozen=True):
    """One entry of ``spec.tls``."""

    hosts: list[str] = []
    secret_name: str | None = None


class IngressSpec(_Model, frozen=True):
    """``Ingress.spec``."""

    ingress_class_name: str | None = None
    default_backend: IngressBackend | None = None
    rules: list[IngressRule] = []
    tls: list[IngressTLS] = []


class LoadBalancerIngress(_Model, frozen=True):
    """One address of ``status.loadBalancer.ingress`` (Ingress and Service alike)."""

    ip: str | None = None
    hostname: str | None = None


class LoadBalancerStatus(_Model, frozen=True):
    """``status.loadBalancer``."""

    ingress: list[LoadBalancerIngress] | None = None


class IngressStatus(_Model, frozen=True):
    """``Ingress.status`` (written by the leader, see :mod:`silex.status`)."""

    load_balancer: LoadBalancerStatus = msgspec.field(default_factory=LoadBalancerStatus)


class Ingress(_Object, frozen=True):
    """networking.k8s.io/v1 Ingress."""

    KIND: ClassVar[Kind] = "Ingress"
    spec: IngressSpec = msgspec.field(default_factory=IngressSpec)
    status: IngressStatus = msgspec.field(default_factory=IngressStatus)


# --- IngressClass -------------------------------------------------------------------------------


class IngressClassSpec(_Model, frozen=True):
    """``IngressClass.spec``."""

    controller: str = ""


class IngressClass(_Object, frozen=True):
    """networking.k8s.io/v1 IngressClass (cluster-scoped)."""

    KIND: ClassVar[Kind] = "IngressClass"
    spec: IngressClassSpec = msgspec.field(default_factory=IngressClassSpec)

    @property
    def is_default(self) -> bool:
        """True when annotated ``ingressclass.kubernetes.io/is-default-class: "true"``."""
        value = self.metadata.annotations.get(IS_DEFAULT_CLASS_ANNOTATION, "")
        return value.strip().lower() == "true"


# --- Service ------------------------------------------------------------------------------------


class ServicePort(_Model, frozen=True):
    """One entry of ``Service.spec.ports``."""

    port: int = 0
    name: str = ""
    target_port: int | str | None = None
    protocol: str = "TCP"


class ServiceSpec(_Model, frozen=True):
    """``Service.spec``."""

    type: str = "ClusterIP"
    ports: list[ServicePort] = []
    cluster_ip: str | None = msgspec.field(default=None, name="clusterIP")


class ServiceStatus(_Model, frozen=True):
    """``Service.status``."""

    load_balancer: LoadBalancerStatus = msgspec.field(default_factory=LoadBalancerStatus)


class Service(_Object, frozen=True):
    """v1 Service."""

    KIND: ClassVar[Kind] = "Service"
    spec: ServiceSpec = msgspec.field(default_factory=ServiceSpec)
    status: ServiceStatus = msgspec.field(default_factory=ServiceStatus)


# --- EndpointSlice (discovery.k8s.io/v1) --------------------------------------------------------


class EndpointConditions(_Model, frozen=True):
    """``endpoints[].conditions``; an absent value means "unknown" (ready: treat as ready)."""

    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None


class SliceEndpoint(_Model, frozen=True):
    """One entry of ``EndpointSlice.endpoints``."""

    addresses: list[str] = []
    conditions: EndpointConditions = msgspec.field(default_factory=EndpointConditions)


class EndpointPort(_Model, frozen=True):
    """One entry of ``EndpointSlice.ports``."""

    name: str | None = None
    port: int | None = None
    protocol: str | None = None


class EndpointSlice(_Object, frozen=True):
    """discovery.k8s.io/v1 EndpointSlice."""

    KIND: ClassVar[Kind] = "EndpointSlice"
    address_type: str = "IPv4"
    endpoints: list[SliceEndpoint] = []
    ports: list[EndpointPort] | None = None

    @property
    def service_name(self) -> str | None:
        """The Service this slice belongs to (label ``kubernetes.io/service-name``)."""
        return self.metadata.labels.get(SERVICE_NAME_LABEL)


# --- Secret -------------------------------------------------------------------------------------


class Secret(_Object, frozen=True):
    """v1 Secret (``data`` values are base64, as on the wire)."""

    KIND: ClassVar[Kind] = "Secret"
    type: str = "Opaque"
    data: dict[str, str] = {}
    string_data: dict[str, str] = {}
    """``stringData`` (manifest files only: the API server folds it into ``data``)."""


KubeObject = Ingress | IngressClass | Service | EndpointSlice | Secret
MODELS: Final[dict[str, type[KubeObject]]] = {
    "Ingress": Ingress,
    "IngressClass": IngressClass,
    "Service": Service,
    "EndpointSlice": EndpointSlice,
    "Secret": Secret,
}

ModelT = TypeVar("ModelT", bound=msgspec.Struct)


def convert(raw: Any, model: type[ModelT]) -> ModelT:
    """Build ``model`` from parsed YAML/JSON; errors name the field path (``$.spec...``)."""
    return msgspec.convert(raw, type=model)
