"""``status.loadBalancer.ingress`` of our Ingresses (written by the leader only).

The addresses come from ``--publish-status-address`` (IPs or host names, as given) or from the
``--publish-service`` Service (its own ``status.loadBalancer.ingress``, else its ClusterIP).
:meth:`StatusWriter.sync` patches the status subresource of every Ingress of ours whose status
differs, and clears it on an Ingress that stopped being ours (another class) when it still
shows exactly the addresses we wrote. Ingresses that were never ours are never touched. Each
write is preceded by an ``is_leader()`` check, so losing the Lease stops writes at once.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec

from silex.objects import Ingress, LoadBalancerIngress, Service
from silex.sources.kube import KubeClient, KubeError
from silex.store import ObjectKey, Snapshot
from silex.translate import TranslateOptions, owned_ingresses

log = logging.getLogger("silex")

Address = tuple[str, str]
"""``("ip", "10.0.0.1")`` or ``("hostname", "lb.example.com")``."""
MERGE_PATCH = "application/merge-patch+json"


def parse_addresses(text: str) -> tuple[Address, ...]:
    """``--publish-status-address``: comma-separated IPs or host names.

    Raises ValueError for an empty list or an empty item.
    """
    items = [item.strip() for item in text.split(",")]
    if not items or any(not item for item in items):
        raise ValueError(f"{text!r} is not a comma-separated list of IPs or host names")
    addresses: list[Address] = []
    for item in items:
        try:
            addresses.append(("ip", str(ipaddress.ip_address(item))))
        except ValueError:
            addresses.append(("hostname", item.lower().rstrip(".")))
    return tuple(sorted(set(addresses)))


def parse_service_ref(text: str) -> tuple[str, str]:
    """``--publish-service NAMESPACE/NAME``; raises ValueError."""
    namespace, slash, name = text.partition("/")
    if not slash or not namespace or not name or "/" in name:
        raise ValueError(f"{text!r} is not NAMESPACE/NAME")
    return namespace, name


def _addresses_of(entries: Sequence[LoadBalancerIngress] | None) -> tuple[Address, ...]:
    found: set[Address] = set()
    for entry in entries or ():
        if entry.ip:
            found.add(("ip", entry.ip))
        elif entry.hostname:
            found.add(("hostname", entry.hostname))
    return tuple(sorted(found))


def service_addresses(service: Service) -> tuple[Address, ...]:
    """A published Service's load-balancer addresses, else its ClusterIP (none if headless)."""
    found = _addresses_of(service.status.load_balancer.ingress)
    if found:
        return found
    cluster_ip = service.spec.cluster_ip
    if cluster_ip and cluster_ip != "None":
        return (("ip", cluster_ip),)
    return ()


def ingress_addresses(ingress: Ingress) -> tuple[Address, ...]:
    """What an Ingress's status shows now."""
    return _addresses_of(ingress.status.load_balancer.ingress)


@dataclass(frozen=True)
class StatusSource:
    """Exactly one of: fixed addresses, or a Service to read them from."""

    addresses: tuple[Address, ...] = ()
    service: tuple[str, str] | None = None


class StatusWriter:
    """Keeps the status of our Ingresses equal to the published addresses."""

    def __init__(
        self,
        kube: KubeClient,
        options: TranslateOptions,
        source: StatusSource,
        is_leader: Callable[[], bool],
    ) -> None:
        self.kube = kube
        self.options = options
        self.source = source
        self.is_leader = is_leader
        self._ours: set[ObjectKey] = set()
        """Ingresses whose status we set (or found already set to our addresses)."""
        self._written: dict[ObjectKey, tuple[str, tuple[Address, ...]]] = {}
        """Last write per Ingress: (resourceVersion it was based on, addresses)."""
        self.patches = 0

    async def addresses(self, snapshot: Snapshot) -> tuple[Address, ...] | None:
        """The addresses to publish; None when they cannot be known now (leave status alone)."""
        if self.source.service is None:
            return self.source.addresses
        namespace, name = self.source.service
        service = snapshot.services.get((namespace, name))
        if service is None:  # not in a watched namespace (or not there yet): read it
            try:
                data = await self.kube.request(
                    "GET", f"/api/v1/namespaces/{namespace}/services/{name}"
                )
                service = msgspec.json.decode(data, type=Service)
            except (KubeError, msgspec.ValidationError, msgspec.DecodeError) as exc:
                log.warning(
                    "cannot read --publish-service %s/%s: %s",
                    namespace,
                    name,
                    exc,
                    extra={"object": f"Service {namespace}/{name}"},
                )
                return None
        return service_addresses(service)

    async def sync(self, snapshot: Snapshot) -> None:
        """Bring every status in line (leader only; a no-op for followers)."""
        if not self.is_leader():
            return
        addresses = await self.addresses(snapshot)
        if addresses is None:
            return
        owned = owned_ingresses(snapshot, self.options)
        owned_keys = {ingress.key for ingress in owned}
        for ingress in owned:
            differs = ingress_addresses(ingress) != addresses
            if differs and not await self._patch(ingress, addresses):
                return
            self._ours.add(ingress.key)
        for key in sorted(self._ours - owned_keys):
            former = snapshot.ingresses.get(key)
            ours_shown = (
                former is not None and bool(addresses) and ingress_addresses(former) == addresses
            )
            if former is not None and ours_shown and not await self._patch(former, ()):
                return
            self._ours.discard(key)
            self._written.pop(key, None)

    async def _patch(self, ingress: Ingress, addresses: tuple[Address, ...]) -> bool:
        """Patch one status; False if we must stop (no longer the leader)."""
        if not self.is_leader():
            return False
        key = ingress.key
        if self._written.get(key) == (ingress.metadata.resource_version, addresses):
            return True  # already written; the watch has not caught up yet
        entries = [{kind: value} for kind, value in addresses] if addresses else None
        body = {"status": {"loadBalancer": {"ingress": entries}}}
        namespace, name = key
        path = f"/apis/networking.k8s.io/v1/namespaces/{namespace}/ingresses/{name}/status"
        try:
            await self.kube.request("PATCH", path, body=body, content_type=MERGE_PATCH)
        except KubeError as exc:
            if not exc.not_found:
                log.warning(
                    "cannot update the status of Ingress %s: %s",
                    ingress.ref,
                    exc,
                    extra={"object": f"Ingress {ingress.ref}"},
                )
            return True
        self.patches += 1
        self._written[key] = (ingress.metadata.resource_version, addresses)
        shown = ", ".join(value for _, value in addresses) or "nothing"
        log.info(
            "status of Ingress %s: load balancer %s",
            ingress.ref,
            shown,
            extra={"object": f"Ingress {ingress.ref}"},
        )
        return True
