"""Ingress backends -> table backends: Service port, then the ready endpoints behind it.

- The Ingress names a Service port by number (``port.number`` = the Service port's ``port``)
  or by name (``port.name`` = the Service port's ``name``).
- Endpoints come from the EndpointSlices labelled ``kubernetes.io/service-name: <service>`` in
  the same namespace. The endpoint port is the slice port whose name equals the Service port's
  name (``""`` for an unnamed port), TCP only.
- Ready endpoints only (``conditions.ready`` absent counts as ready, as the API specifies);
  endpoints that are serving but terminating are used only when no endpoint is ready.
  Only the first address of an endpoint is used (the API declares them fungible).
- An unknown Service or port still yields a backend — with no endpoints, so requests get 503 —
  and a warning Problem naming the Ingress field.

Backend id: ``<namespace>/<service>:<port>``, where ``<port>`` is the Service port's number
when the Service and port are known — so the same Service port named two ways (``name: http``,
``number: 8080``) is one backend, with one endpoint set and one load-balancing rotation —
and otherwise the port as the Ingress wrote it (number or name). A backend spoken to with
another protocol than plain HTTP gets ``+<protocol>`` appended, and one with TLS settings also
``-<digest>`` of those settings: Ingresses asking for different settings for one Service port
get separate backends (and connection pools), equal settings share one.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections import defaultdict
from collections.abc import Mapping

import msgspec

from silex import problems
from silex.objects import EndpointSlice, IngressBackend, Service, ServicePort
from silex.problems import Problem
from silex.store import ObjectKey
from silex.table import (
    Backend,
    BackendProtocol,
    Balance,
    Endpoint,
    HealthCheck,
    UpstreamTls,
    endpoint_order,
)

_ENCODER = msgspec.json.Encoder(order="deterministic")


def backend_id(
    namespace: str,
    service: str,
    port: int | str,
    protocol: BackendProtocol = "http",
    tls: UpstreamTls | None = None,
) -> str:
    """The table id of a Service port spoken to with ``protocol`` and ``tls``:
    ``<namespace>/<service>:<port>[+<protocol>[-<digest of tls>]]``."""
    base = f"{namespace}/{service}:{port}"
    if protocol == "http" and tls is None:
        return base
    if tls is None:
        return f"{base}+{protocol}"
    digest = hashlib.sha256(_ENCODER.encode(tls)).hexdigest()[:10]
    return f"{base}+{protocol}-{digest}"


def index_slices_by_service(
    slices: Mapping[ObjectKey, EndpointSlice],
) -> dict[ObjectKey, list[EndpointSlice]]:
    """EndpointSlices grouped by the ``(namespace, service)`` they are labelled with."""
    index: dict[ObjectKey, list[EndpointSlice]] = defaultdict(list)
    for (namespace, _), endpoint_slice in sorted(slices.items()):
        service = endpoint_slice.service_name
        if service:
            index[(namespace, service)].append(endpoint_slice)
    return dict(index)


def _slice_port(endpoint_slice: EndpointSlice, port_name: str) -> int | None:
    for port in endpoint_slice.ports or []:
        if (
            (port.name or "") == port_name
            and (port.protocol or "TCP") == "TCP"
            and port.port is not None
            and 1 <= port.port <= 65535
        ):
            return port.port
    return None


@functools.lru_cache(maxsize=65536)
def _address(raw: str) -> str | None:
    # Cached: every reconcile resolves every endpoint again, and parsing costs ~10 µs.
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        return None


def collect_endpoints(
    service_port: ServicePort, slices: list[EndpointSlice]
) -> tuple[list[Endpoint], list[Problem]]:
    """The endpoints serving ``service_port``: ready ones, else serving-but-terminating ones."""
    ready: dict[tuple[str, int], Endpoint] = {}
    terminating: dict[tuple[str, int], Endpoint] = {}
    found: list[Problem] = []
    for endpoint_slice in slices:
        if endpoint_slice.address_type not in ("IPv4", "IPv6"):
            continue
        port = _slice_port(endpoint_slice, service_port.name)
        if port is None:
            continue
        for index, slice_endpoint in enumerate(endpoint_slice.endpoints):
            if not slice_endpoint.addresses:
                continue
            address = _address(slice_endpoint.addresses[0])
            if address is None:
                found.append(
                    problems.warning(
                        f"{slice_endpoint.addresses[0]!r} is not an IP address; endpoint skipped",
                        kind="EndpointSlice",
                        namespace=endpoint_slice.metadata.namespace,
                        name=endpoint_slice.metadata.name,
                        field=f"endpoints[{index}].addresses[0]",
                    )
                )
                continue
            conditions = slice_endpoint.conditions
            is_ready = conditions.ready is not False
            endpoint = Endpoint(address=address, port=port)
            if is_ready:
                ready[(address, port)] = endpoint
            elif conditions.serving and conditions.terminating:
                terminating[(address, port)] = endpoint
    chosen = ready or terminating
    return sorted(chosen.values(), key=endpoint_order), found


class BackendResolver:
    """Resolves Ingress backends against one snapshot's Services and EndpointSlices.

    Every resolved backend is cached by id; :meth:`backend` returns it for the table.
    """

    def __init__(
        self,
        services: Mapping[ObjectKey, Service],
        endpoint_slices: Mapping[ObjectKey, EndpointSlice],
    ) -> None:
        self._services = services
        self._slices = index_slices_by_service(endpoint_slices)
        self._backends: dict[str, Backend] = {}

    def backend(self, backend_key: str) -> Backend:
        """A backend previously returned by :meth:`resolve` or :meth:`with_settings`."""
        return self._backends[backend_key]

    def with_settings(
        self, backend_key: str, balance: Balance | None, health_check: HealthCheck | None
    ) -> str:
        """The id of backend ``backend_key`` with these balancing and health-check settings.

        Default settings keep the Service port's id. Other settings get their own backend (the
        id plus ``~`` and a digest of the settings), because Ingresses sharing a Service port may
        ask for different policies; endpoint state in the core is keyed by address and shared.
        """
        if balance is None and health_check is None:
            return backend_key
        encoded = msgspec.json.encode((balance, health_check), order="deterministic")
        policy = balance.policy if balance is not None else "round_robin"
        key = f"{backend_key}~{policy}-{hashlib.sha256(encoded).hexdigest()[:8]}"
        if key not in self._backends:
            base = self._backends[backend_key]
            self._backends[key] = msgspec.structs.replace(
                base, balance=balance, health_check=health_check
            )
        return key

    def resolve(
        self,
        ingress_key: ObjectKey,
        backend: IngressBackend,
        field: str,
        protocol: BackendProtocol = "http",
        tls: UpstreamTls | None = None,
    ) -> tuple[str | None, list[Problem]]:
        """The backend id for an Ingress backend at ``field`` spoken to with ``protocol`` and
        ``tls``, and any problems.

        ``None`` means the backend is unusable (an error Problem says why); a missing Service
        or port still gives an id, of a backend without endpoints.
        """
        namespace, ingress_name = ingress_key

        def problem(severity: str, where: str, message: str) -> Problem:
            make = problems.error if severity == "error" else problems.warning
            return make(
                message, kind="Ingress", namespace=namespace, name=ingress_name, field=where
            )

        ref = backend.service
        if ref is None:
            what = "resource backends are not supported" if backend.resource else "no service"
            return None, [problem("error", field, f"{what}; this backend is ignored")]
        if not ref.name:
            return None, [problem("error", f"{field}.service.name", "service name is empty")]
        port_ref = ref.port
        port: int | str
        if port_ref.number is not None and not port_ref.name:
            port = port_ref.number
        elif port_ref.name and port_ref.number is None:
            port = port_ref.name
        else:
            return None, [
                problem(
                    "error", f"{field}.service.port", "set exactly one of port.number or port.name"
                )
            ]
        # As written, until the port is resolved.
        key = backend_id(namespace, ref.name, port, protocol, tls)
        found: list[Problem] = []
        service = self._services.get((namespace, ref.name))
        endpoints: list[Endpoint] = []
        if service is None:
            found.append(
                problem(
                    "warning",
                    f"{field}.service.name",
                    f'service "{ref.name}" not found; requests get 503',
                )
            )
        elif service.spec.type == "ExternalName":
            found.append(
                problem(
                    "warning",
                    f"{field}.service.name",
                    f'service "{ref.name}" is of type ExternalName, which is not supported; '
                    "requests get 503",
                )
            )
        else:
            service_port = _find_service_port(service, port)
            if service_port is None:
                described = f'port named "{port}"' if isinstance(port, str) else f"port {port}"
                found.append(
                    problem(
                        "warning",
                        f"{field}.service.port",
                        f'service "{ref.name}" has no {described}',
                    )
                )
            else:
                key = backend_id(namespace, ref.name, service_port.port, protocol, tls)
                endpoints, endpoint_problems = collect_endpoints(
                    service_port, self._slices.get((namespace, ref.name), [])
                )
                found.extend(endpoint_problems)
        if key not in self._backends:
            self._backends[key] = Backend(
                service=f"{namespace}/{ref.name}", endpoints=endpoints, protocol=protocol, tls=tls
            )
        return key, found


def _find_service_port(service: Service, port: int | str) -> ServicePort | None:
    for service_port in service.spec.ports:
        if isinstance(port, int) and service_port.port == port:
            return service_port
        if isinstance(port, str) and service_port.name == port:
            return service_port
    return None
