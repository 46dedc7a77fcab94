"""Ingresses -> virtual hosts, routes and default backends (the core of the translation).

Semantics (DESIGN.md, "Routing semantics"):

- **Ours or not.** ``spec.ingressClassName`` naming an IngressClass whose ``spec.controller``
  is our controller name — or, when no IngressClass of that name exists, equal to our class
  name; else the legacy ``kubernetes.io/ingress.class`` annotation equal to our class name;
  else (no class at all) when an IngressClass of ours is the default class, or
  ``watch_ingress_without_class``. Other Ingresses are ignored entirely (no Problems).
- **Hosts.** Lower-cased, a trailing dot dropped; no host means the catch-all ``*``. Invalid
  names are an error Problem and drop that rule.
- **Paths.** ``ImplementationSpecific`` is Prefix, and an empty path is ``/``; ``Exact`` and
  ``Prefix`` need a path starting with ``/``. A bad path is an error Problem dropping that
  path only.
- **Merging.** Rules for one host from all Ingresses merge. Two routes conflict when they
  have the same host, match type and path (Prefix paths compared by segments, so ``/foo``,
  ``/foo/`` and ``//foo`` are the same, as in the core). The oldest Ingress
  (``creationTimestamp``, then namespace/name; a missing timestamp counts as newest) wins;
  the loser gets a warning Problem naming its path.
- **Default backends.** An Ingress's ``spec.defaultBackend`` becomes the default backend of
  every host it has rules for (oldest wins per host) and, for the oldest Ingress that has one,
  the table's default backend (for requests no host matches); other Ingresses with a
  ``defaultBackend`` get a warning.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from silex import problems
from silex.objects import (
    LEGACY_CLASS_ANNOTATION,
    HTTPIngressPath,
    Ingress,
    IngressBackend,
    IngressClass,
    Secret,
)
from silex.problems import Problem
from silex.store import ObjectKey, Snapshot
from silex.table import PathMatch, Route, RouteOptions, RoutingTable, VirtualHost
from silex.translate.annotations import redirect_policy, route_options
from silex.translate.balancing import BackendSettings, backend_settings
from silex.translate.endpoints import BackendResolver
from silex.translate.options import TranslateOptions
from silex.translate.tls import TlsResult, build_tls, structural_check
from silex.translate.upstream import (
    Checkers,
    UpstreamSettings,
    structural_ca_check,
    upstream_settings,
    upstream_tls,
)

_Reporter = Callable[[problems.Severity, str, str], None]
"""Reports one Problem (severity, field, message) on the Ingress being translated."""

CATCH_ALL_HOST: Final = "*"
_DNS_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_PATH_TYPES: Final[dict[str, PathMatch]] = {
    "Exact": "exact",
    "Prefix": "prefix",
    "ImplementationSpecific": "prefix",
}


# --- Which Ingresses are ours ---------------------------------------------------------------


def is_ours(
    ingress: Ingress, classes: Mapping[str, IngressClass], options: TranslateOptions
) -> bool:
    """True if this controller implements ``ingress`` (see the module docstring)."""
    class_name = ingress.spec.ingress_class_name
    if class_name:
        ingress_class = classes.get(class_name)
        if ingress_class is not None:
            return ingress_class.spec.controller == options.controller_name
        return class_name == options.ingress_class
    legacy = ingress.metadata.annotations.get(LEGACY_CLASS_ANNOTATION)
    if legacy is not None:
        return legacy == options.ingress_class
    if options.watch_ingress_without_class:
        return True
    return any(
        ingress_class.is_default and ingress_class.spec.controller == options.controller_name
        for ingress_class in classes.values()
    )


def age_key(ingress: Ingress) -> tuple[bool, datetime, str, str]:
    """Sort key putting the oldest Ingress first (missing timestamps last, then by name)."""
    created = ingress.metadata.created_at
    return (
        created is None,
        created or datetime.min,
        ingress.metadata.namespace,
        ingress.metadata.name,
    )


def owned_ingresses(snapshot: Snapshot, options: TranslateOptions) -> list[Ingress]:
    """The Ingresses of the snapshot that are ours, oldest first."""
    classes = {
        ingress_class.metadata.name: ingress_class
        for ingress_class in snapshot.ingress_classes.values()
    }
    ours = [
        ingress for ingress in snapshot.ingresses.values() if is_ours(ingress, classes, options)
    ]
    return sorted(ours, key=age_key)


# --- Hosts and paths ------------------------------------------------------------------------


def normalize_host(raw: str | None) -> str:
    """The table name of a rule's host: lower case, no trailing dot, ``*`` when absent.

    Raises ValueError (with a message for the user) for a name that is not a DNS name or a
    one-label wildcard.
    """
    if raw is None or raw == "":
        return CATCH_ALL_HOST
    host = raw.lower()
    if host.endswith("."):
        host = host[:-1]
    name = host.removeprefix("*.")
    labels = name.split(".")
    if len(name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise ValueError(
            f'"{raw}" is not a valid host: use a DNS name (labels of a-z, 0-9 and "-"), '
            'optionally starting with "*." for one extra label, and no port'
        )
    return host


def _path_error(path: str) -> str | None:
    if not path.startswith("/"):
        return f'path "{path}" must start with "/"'
    for char in path:
        if char in "?#" or char.isspace() or unicodedata.category(char) == "Cc":
            return f"path {path!r} must not contain {char!r} (percent-encode it)"
    return None


class PathError(ValueError):
    """A rule path that cannot be routed; ``field`` is ``"path"`` or ``"pathType"``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def normalize_path(rule_path: HTTPIngressPath) -> tuple[str, PathMatch]:
    """The table ``(path, match)`` of a rule path; raises :class:`PathError`.

    A missing pathType is taken as ImplementationSpecific (the API server would reject it).
    """
    path_type = rule_path.path_type or "ImplementationSpecific"
    path_match = _PATH_TYPES.get(path_type)
    if path_match is None:
        raise PathError(
            "pathType",
            f'unsupported pathType "{path_type}" (use Exact, Prefix or ImplementationSpecific)',
        )
    path = rule_path.path or ""
    if path == "" and path_type == "ImplementationSpecific":
        path = "/"
    error = _path_error(path)
    if error is not None:
        raise PathError("path", error)
    return path, path_match


def conflict_key(path: str, path_match: PathMatch) -> tuple[PathMatch, str]:
    """Routes with equal keys in one host conflict (Prefix paths compare by segments)."""
    if path_match == "prefix":
        return (path_match, "/" + "/".join(segment for segment in path.split("/") if segment))
    return (path_match, path)


# --- Building the table ---------------------------------------------------------------------


@dataclass
class _HostBuilder:
    routes: dict[tuple[PathMatch, str], Route] = field(default_factory=dict)
    default_backend: str | None = None
    default_owner: str = ""
    ssl_redirect_off: bool = False
    force_ssl_redirect: bool = False


@dataclass
class _TableBuilder:
    options: TranslateOptions
    resolver: BackendResolver
    secrets: Mapping[ObjectKey, Secret] = field(default_factory=dict)
    checkers: Checkers = field(default_factory=Checkers)
    tls: TlsResult = field(default_factory=TlsResult)
    hosts: dict[str, _HostBuilder] = field(default_factory=dict)
    used_backends: set[str] = field(default_factory=set)
    default_backend: str | None = None
    default_owner: str = ""
    problems: list[Problem] = field(default_factory=list)

    def add_ingress(self, ingress: Ingress) -> None:
        namespace, name = ingress.metadata.namespace, ingress.metadata.name

        def report(severity: problems.Severity, where: str, message: str) -> None:
            self.problems.append(
                problems.Problem(
                    severity=severity,
                    kind="Ingress",
                    namespace=namespace,
                    name=name,
                    field=where,
                    message=message,
                )
            )

        route_opts, annotation_problems = route_options(ingress)
        self.problems.extend(annotation_problems)
        policy, policy_problems = redirect_policy(ingress)
        self.problems.extend(policy_problems)
        settings, settings_problems = backend_settings(ingress)
        self.problems.extend(settings_problems)
        upstream, upstream_problems = upstream_settings(ingress)
        self.problems.extend(upstream_problems)
        rule_hosts: list[str] = []
        for i, rule in enumerate(ingress.spec.rules):
            rule_field = f"spec.rules[{i}]"
            try:
                host = normalize_host(rule.host)
            except ValueError as exc:
                report("error", f"{rule_field}.host", f"{exc}; this rule is ignored")
                continue
            if host not in rule_hosts:
                rule_hosts.append(host)
            host_builder = self.hosts.setdefault(host, _HostBuilder())
            host_builder.ssl_redirect_off |= not policy.ssl_redirect
            host_builder.force_ssl_redirect |= policy.force_ssl_redirect
            if rule.http is None:
                continue
            for j, rule_path in enumerate(rule.http.paths):
                path_field = f"{rule_field}.http.paths[{j}]"
                self._add_path(
                    ingress,
                    rule_path,
                    host=host,
                    host_builder=host_builder,
                    path_field=path_field,
                    route_opts=route_opts,
                    settings=settings,
                    upstream=upstream,
                    redirect_https=policy.redirects(self.tls.has_tls(host)),
                    report=report,
                )
        self._add_default_backend(ingress, rule_hosts, settings, upstream, report)

    def _resolve(
        self, ingress: Ingress, backend: IngressBackend, where: str, upstream: UpstreamSettings
    ) -> str | None:
        """The backend id of ``backend`` spoken to as ``upstream`` says (Problems recorded)."""
        tls = None
        if backend.service is not None:
            service = (ingress.metadata.namespace, backend.service.name)
            tls, tls_problems = upstream_tls(
                upstream, service, self.secrets, ingress, self.checkers
            )
            self.problems.extend(tls_problems)
        backend_key, backend_problems = self.resolver.resolve(
            ingress.key, backend, where, upstream.protocol, tls
        )
        self.problems.extend(backend_problems)
        return backend_key

    def _add_path(
        self,
        ingress: Ingress,
        rule_path: HTTPIngressPath,
        *,
        host: str,
        host_builder: _HostBuilder,
        path_field: str,
        route_opts: RouteOptions,
        settings: BackendSettings,
        upstream: UpstreamSettings,
        redirect_https: bool,
        report: _Reporter,
    ) -> None:
        if rule_path.path_type is None:
            report(
                "warning",
                f"{path_field}.pathType",
                "pathType is missing; treated as ImplementationSpecific (Prefix)",
            )
        try:
            path, path_match = normalize_path(rule_path)
        except PathError as exc:
            report("error", f"{path_field}.{exc.field}", f"{exc}; this path is ignored")
            return
        backend_key = self._resolve(ingress, rule_path.backend, f"{path_field}.backend", upstream)
        if backend_key is None:
            return
        backend_key = self.resolver.with_settings(
            backend_key, settings.balance, settings.health_check
        )
        key = conflict_key(path, path_match)
        existing = host_builder.routes.get(key)
        if existing is not None:
            how = "Exact" if path_match == "exact" else "Prefix"
            by = (
                "earlier in this Ingress"
                if existing.ingress == ingress.ref
                else f"by Ingress {existing.ingress} (older)"
            )
            report(
                "warning",
                path_field,
                f'host "{host}" {how} path "{path}" is already routed {by}; this path is ignored',
            )
            return
        host_builder.routes[key] = Route(
            path=path,
            path_match=path_match,
            backend=backend_key,
            ingress=ingress.ref,
            options=None if route_opts.is_empty() else route_opts,
            redirect_https=redirect_https,
        )
        self.used_backends.add(backend_key)

    def _add_default_backend(
        self,
        ingress: Ingress,
        rule_hosts: list[str],
        settings: BackendSettings,
        upstream: UpstreamSettings,
        report: _Reporter,
    ) -> None:
        default = ingress.spec.default_backend
        if default is None:
            return
        where = "spec.defaultBackend"
        backend_key = self._resolve(ingress, default, where, upstream)
        if backend_key is None:
            return
        backend_key = self.resolver.with_settings(
            backend_key, settings.balance, settings.health_check
        )
        owner = ingress.ref
        for host in rule_hosts:
            host_builder = self.hosts[host]
            if host_builder.default_backend is None:
                host_builder.default_backend = backend_key
                host_builder.default_owner = owner
                self.used_backends.add(backend_key)
            elif host_builder.default_owner != owner:
                report(
                    "warning",
                    where,
                    f'host "{host}" already has the default backend of Ingress '
                    f"{host_builder.default_owner} (older); not used for this host",
                )
        if self.default_backend is None:
            self.default_backend = backend_key
            self.default_owner = owner
            self.used_backends.add(backend_key)
        else:
            scope = " (it still serves this Ingress's hosts)" if rule_hosts else ""
            report(
                "warning",
                where,
                "not used as the default backend for unmatched hosts: Ingress "
                f"{self.default_owner} (older) already provides it{scope}",
            )

    def build(self) -> RoutingTable:
        hosts = [
            VirtualHost(
                name=name,
                routes=sorted(
                    builder.routes.values(), key=lambda route: (route.path, route.path_match)
                ),
                default_backend=builder.default_backend,
                redirect_https=builder.force_ssl_redirect
                or (self.tls.has_tls(name) and not builder.ssl_redirect_off),
            )
            for name, builder in sorted(self.hosts.items())
        ]
        return RoutingTable(
            listeners=dict(sorted(self.options.listeners.items())),
            defaults=self.options.defaults,
            hosts=hosts,
            backends={key: self.resolver.backend(key) for key in sorted(self.used_backends)},
            default_backend=self.default_backend,
            certificates=dict(sorted(self.tls.certificates.items())),
            default_certificate=self.tls.default_certificate,
        )


def _rule_hosts(ingress: Ingress) -> list[str]:
    """The valid table host names of an Ingress's rules (invalid ones are reported later)."""
    hosts: list[str] = []
    for rule in ingress.spec.rules:
        try:
            host = normalize_host(rule.host)
        except ValueError:
            continue
        if host not in hosts:
            hosts.append(host)
    return hosts


def build_table(
    snapshot: Snapshot, options: TranslateOptions
) -> tuple[RoutingTable, list[Problem]]:
    """Translate every Ingress of ours in ``snapshot`` into one table (see module docstring)."""
    owned = owned_ingresses(snapshot, options)
    tls = build_tls(
        snapshot,
        [(ingress, _rule_hosts(ingress)) for ingress in owned],
        options.default_ssl_certificate,
        options.check_certificate,
    )
    builder = _TableBuilder(
        options=options,
        resolver=BackendResolver(snapshot.services, snapshot.endpoint_slices),
        secrets=snapshot.secrets,
        checkers=Checkers(
            ca=options.check_ca_certificates or structural_ca_check,
            pair=options.check_certificate or structural_check,
        ),
        tls=tls,
    )
    builder.problems.extend(tls.problems)
    for ingress in owned:
        try:
            builder.add_ingress(ingress)
        except Exception as exc:  # one broken Ingress never stops the others
            builder.problems.append(
                problems.error(
                    f"internal error while translating ({type(exc).__name__}: {exc}); "
                    "please report this",
                    kind="Ingress",
                    namespace=ingress.metadata.namespace,
                    name=ingress.metadata.name,
                )
            )
    return builder.build(), problems.unique(builder.problems)


__all__ = [
    "CATCH_ALL_HOST",
    "ObjectKey",
    "PathError",
    "age_key",
    "build_table",
    "conflict_key",
    "is_ours",
    "normalize_host",
    "normalize_path",
    "owned_ingresses",
]
