"""Builders of Kubernetes objects for tests: plain manifests, converted by silex.objects."""

from __future__ import annotations

from typing import Any

from silex.objects import (
    EndpointSlice,
    Ingress,
    IngressClass,
    KubeObject,
    Service,
    convert,
)
from silex.store import Snapshot

CONTROLLER = "silex.dev/ingress-controller"


def path(
    path: str | None,
    service: str,
    port: int | str = 80,
    path_type: str | None = "Prefix",
) -> dict[str, Any]:
    """One ``http.paths`` entry."""
    entry: dict[str, Any] = {"backend": backend(service, port)}
    if path is not None:
        entry["path"] = path
    if path_type is not None:
        entry["pathType"] = path_type
    return entry


def backend(service: str, port: int | str = 80) -> dict[str, Any]:
    """An Ingress backend naming a Service port by number (int) or name (str)."""
    port_ref = {"number": port} if isinstance(port, int) else {"name": port}
    return {"service": {"name": service, "port": port_ref}}


def rule(host: str | None, *paths: dict[str, Any]) -> dict[str, Any]:
    """One ``spec.rules`` entry."""
    entry: dict[str, Any] = {"http": {"paths": list(paths)}}
    if host is not None:
        entry["host"] = host
    return entry


def ingress(
    name: str,
    *rules: dict[str, Any],
    namespace: str = "default",
    class_name: str | None = "silex",
    default_backend: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    created: str | None = None,
) -> Ingress:
    """An Ingress (class ``silex`` unless told otherwise)."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        metadata["annotations"] = annotations
    if created:
        metadata["creationTimestamp"] = created
    spec: dict[str, Any] = {"rules": list(rules)}
    if class_name is not None:
        spec["ingressClassName"] = class_name
    if default_backend is not None:
        spec["defaultBackend"] = default_backend
    return convert({"kind": "Ingress", "metadata": metadata, "spec": spec}, Ingress)


def ingress_class(
    name: str = "silex", controller: str = CONTROLLER, *, default: bool = False
) -> IngressClass:
    """An IngressClass."""
    annotations = {"ingressclass.kubernetes.io/is-default-class": "true"} if default else {}
    return convert(
        {
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"controller": controller},
        },
        IngressClass,
    )


def service(
    name: str, *ports: tuple[str, int], namespace: str = "default", kind: str = "ClusterIP"
) -> Service:
    """A Service with ``(name, port)`` ports (default: one port named http, 80)."""
    specs = [{"name": port_name, "port": number} for port_name, number in ports or [("http", 80)]]
    return convert(
        {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"type": kind, "ports": specs},
        },
        Service,
    )


def endpoint(address: str, **conditions: bool) -> dict[str, Any]:
    """One EndpointSlice endpoint; conditions given as keywords (ready, serving, terminating)."""
    entry: dict[str, Any] = {"addresses": [address]}
    if conditions:
        entry["conditions"] = conditions
    return entry


def endpoint_slice(
    service_name: str,
    *endpoints: dict[str, Any],
    ports: list[tuple[str, int]] | None = None,
    namespace: str = "default",
    name: str | None = None,
    address_type: str = "IPv4",
) -> EndpointSlice:
    """An EndpointSlice of ``service_name`` with ``(name, port)`` ports (default http, 8080)."""
    return convert(
        {
            "metadata": {
                "name": name or f"{service_name}-abcde",
                "namespace": namespace,
                "labels": {"kubernetes.io/service-name": service_name},
            },
            "addressType": address_type,
            "ports": [{"name": n, "port": p} for n, p in ports or [("http", 8080)]],
            "endpoints": list(endpoints),
        },
        EndpointSlice,
    )


def snapshot(*objects: KubeObject) -> Snapshot:
    """A ready snapshot of exactly these objects."""
    return Snapshot.of(objects)
