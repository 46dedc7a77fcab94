"""Kubernetes objects as JSON dicts (what the fake API server stores), and bounded waits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

NET = "networking.k8s.io/v1"


def ingress(
    name: str,
    namespace: str = "default",
    *,
    host: str | None = None,
    service: str = "web",
    port: int | str = 8080,
    class_name: str | None = "silex",
) -> dict[str, Any]:
    """An Ingress routing ``host`` (default ``<name>.example``) / to ``service``:``port``."""
    port_ref = {"number": port} if isinstance(port, int) else {"name": port}
    spec: dict[str, Any] = {
        "rules": [
            {
                "host": host or f"{name}.example",
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": service, "port": port_ref}},
                        }
                    ]
                },
            }
        ]
    }
    if class_name is not None:
        spec["ingressClassName"] = class_name
    return {
        "apiVersion": NET,
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def ingress_class(
    name: str = "silex", controller: str = "silex.dev/ingress-controller"
) -> dict[str, Any]:
    return {
        "apiVersion": NET,
        "kind": "IngressClass",
        "metadata": {"name": name},
        "spec": {"controller": controller},
    }


def service(
    name: str = "web", namespace: str = "default", port: int = 8080, target_port: int = 8080
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "clusterIP": "10.96.0.10",
            "ports": [{"name": "http", "port": port, "targetPort": target_port}],
        },
    }


def endpoint_slice(
    service_name: str = "web",
    namespace: str = "default",
    port: int = 8080,
    addresses: tuple[str, ...] = ("127.0.0.1",),
) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service_name}-abc",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port}],
        "endpoints": [{"addresses": list(addresses), "conditions": {"ready": True}}],
    }


def tls_secret(name: str, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": "", "tls.key": ""},
    }


def opaque_secret(name: str, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "data": {"password": "c2VjcmV0"},
    }


async def until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``predicate`` (bounded in time and count); fail the test if it never holds."""
    with anyio.fail_after(timeout):
        for _ in range(int(timeout / 0.01) + 10):
            value = predicate()
            if value:
                return value
            await anyio.sleep(0.01)
    raise AssertionError(f"condition never held: {what}")


def lb_of(obj: dict[str, Any] | None) -> list[dict[str, str]]:
    """``status.loadBalancer.ingress`` of an object dict (``[]`` when absent)."""
    if obj is None:
        return []
    return list(((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [])
