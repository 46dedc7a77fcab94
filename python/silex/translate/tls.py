"""``spec.tls`` and Secrets -> the table's certificates (pure: works on any snapshot).

- **Which names.** Every ``spec.tls[i].hosts`` name of an Ingress of ours (lower case, no
  trailing dot; ``*.example.com`` allowed); an entry without ``hosts`` applies to the Ingress's
  rule hosts. A name listed by several Ingresses gets the Secret of the oldest; a younger one
  naming another Secret gets a warning.
- **Which Secret.** ``secretName`` in the Ingress's namespace, of type ``kubernetes.io/tls``
  with ``tls.crt`` and ``tls.key``. A missing, wrong-type, malformed or mismatched Secret is an
  error Problem naming the Secret; its names get the default certificate, and every other
  name is unaffected. An entry without ``secretName`` uses the default certificate.
- **Checked like the core.** ``TranslateOptions.check_certificate`` (the core's own parser,
  wired in by the CLI) decides what is valid and which names the certificate covers (by its
  subject alternative names); a name it does not cover gets a warning and the default
  certificate. Without a checker only the PEM structure is checked.
- **Default certificate.** ``--default-ssl-certificate NAMESPACE/NAME`` (checked the same way);
  when absent or bad, the core's self-signed certificate.
- **Which names redirect.** :meth:`TlsResult.has_tls` tells whether a host has TLS (its name,
  or a wildcard covering it, is listed), which drives the 308 redirects.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from silex import problems
from silex.objects import Ingress, Secret
from silex.problems import Problem
from silex.store import ObjectKey, Snapshot
from silex.table import Certificate

TLS_SECRET_TYPE: Final = "kubernetes.io/tls"
CERT_KEY: Final = "tls.crt"
PRIVATE_KEY_KEY: Final = "tls.key"

CertificateChecker = Callable[[bytes, bytes, list[str]], list[str]]
"""``check(cert_pem, key_pem, names) -> names not covered``; raises ValueError for invalid
material, its message starting with ``cert_pem:`` or ``key_pem:``."""


def structural_check(cert_pem: bytes, key_pem: bytes, names: list[str]) -> list[str]:
    """A checker for when the core is not available: PEM markers only; every name covered."""
    if b"-----BEGIN CERTIFICATE-----" not in cert_pem:
        raise ValueError("cert_pem: no CERTIFICATE block found")
    if b"PRIVATE KEY-----" not in key_pem:
        raise ValueError("key_pem: no PEM private key found")
    return []


@dataclass
class TlsResult:
    """The certificates of a table, the names with TLS, and the Problems found."""

    certificates: dict[str, Certificate] = field(default_factory=dict)
    default_certificate: str | None = None
    tls_names: set[str] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)

    def has_tls(self, host: str) -> bool:
        """True if ``host`` (a table host name) is listed in a TLS section, or covered by a
        listed wildcard (one label)."""
        if host in self.tls_names:
            return True
        first, dot, rest = host.partition(".")
        return bool(dot and first and first != "*" and f"*.{rest}" in self.tls_names)


def _decode(secret: Secret, key: str) -> bytes | None:
    if key in secret.string_data:
        return secret.string_data[key].encode()
    raw = secret.data.get(key)
    if raw is None:
        return None
    return base64.b64decode(raw, validate=True)


@dataclass
class _Loaded:
    pem: tuple[bytes, bytes] | None
    """``(cert_pem, key_pem)`` when the Secret is usable."""


class _Builder:
    def __init__(self, snapshot: Snapshot, check: CertificateChecker) -> None:
        self.secrets = snapshot.secrets
        self.check = check
        self.result = TlsResult()
        self._loaded: dict[ObjectKey, _Loaded] = {}
        self._owner: dict[str, tuple[str, str]] = {}
        """name -> (certificate id or "" for the default, Ingress ref)."""

    def _secret_problem(self, secret: Secret, where: str, message: str) -> None:
        self.result.problems.append(
            problems.error(
                message,
                kind="Secret",
                namespace=secret.metadata.namespace,
                name=secret.metadata.name,
                field=where,
            )
        )

    def load(self, key: ObjectKey) -> tuple[bytes, bytes] | None:
        """The PEM pair of a Secret, or None (a Problem was recorded once)."""
        loaded = self._loaded.get(key)
        if loaded is None:
            loaded = _Loaded(self._load(key))
            self._loaded[key] = loaded
        return loaded.pem

    def _load(self, key: ObjectKey) -> tuple[bytes, bytes] | None:
        secret = self.secrets.get(key)
        if secret is None:
            return None
        fallback = "; its hosts use the default certificate"
        if secret.type != TLS_SECRET_TYPE:
            self._secret_problem(
                secret,
                "type",
                f'type is "{secret.type}", not "{TLS_SECRET_TYPE}"{fallback}',
            )
            return None
        pem: list[bytes] = []
        for data_key in (CERT_KEY, PRIVATE_KEY_KEY):
            try:
                value = _decode(secret, data_key)
            except (binascii.Error, ValueError):
                self._secret_problem(secret, f'data["{data_key}"]', f"not valid base64{fallback}")
                return None
            if not value:
                self._secret_problem(secret, f'data["{data_key}"]', f"missing or empty{fallback}")
                return None
            pem.append(value)
        cert_pem, key_pem = pem
        try:
            self.check(cert_pem, key_pem, [])
        except ValueError as exc:
            message = str(exc)
            data_key = PRIVATE_KEY_KEY if message.startswith("key_pem") else CERT_KEY
            detail = message.partition(": ")[2] or message
            self._secret_problem(secret, f'data["{data_key}"]', f"{detail}{fallback}")
            return None
        return cert_pem, key_pem

    def add_ingress(self, ingress: Ingress, rule_hosts: Iterable[str]) -> None:
        namespace, name = ingress.metadata.namespace, ingress.metadata.name

        def report(severity: problems.Severity, where: str, message: str) -> None:
            self.result.problems.append(
                problems.Problem(
                    severity=severity,
                    kind="Ingress",
                    namespace=namespace,
                    name=name,
                    field=where,
                    message=message,
                )
            )

        from silex.translate.ingress import CATCH_ALL_HOST, normalize_host  # noqa: PLC0415

        for i, entry in enumerate(ingress.spec.tls):
            entry_field = f"spec.tls[{i}]"
            names: list[tuple[str, str]] = []
            if entry.hosts:
                for j, raw in enumerate(entry.hosts):
                    try:
                        host = normalize_host(raw)
                    except ValueError as exc:
                        report("error", f"{entry_field}.hosts[{j}]", f"{exc}; this name is ignored")
                        continue
                    if host == CATCH_ALL_HOST:
                        continue
                    names.append((host, f"{entry_field}.hosts[{j}]"))
            else:
                names = [(h, f"{entry_field}.hosts") for h in rule_hosts if h != CATCH_ALL_HOST]
            for host, _ in names:
                self.result.tls_names.add(host)
            cert_id = ""
            if entry.secret_name:
                ref = f"{namespace}/{entry.secret_name}"
                listed = ", ".join(host for host, _ in names) or "(none)"
                if (namespace, entry.secret_name) not in self.secrets:
                    report(
                        "error",
                        f"{entry_field}.secretName",
                        f"Secret {ref} not found; hosts {listed} use the default certificate",
                    )
                elif self.load((namespace, entry.secret_name)) is not None:
                    cert_id = ref
            self._assign(cert_id, names, ingress.ref, report)

    def _assign(
        self,
        cert_id: str,
        names: list[tuple[str, str]],
        owner: str,
        report: Callable[[problems.Severity, str, str], None],
    ) -> None:
        for host, where in names:
            existing = self._owner.get(host)
            if existing is not None:
                if existing[0] != cert_id and existing[1] != owner:
                    which = f"Secret {existing[0]}" if existing[0] else "the default certificate"
                    report(
                        "warning",
                        where,
                        f'host "{host}" already uses {which} of Ingress {existing[1]} (older); '
                        "this TLS entry is ignored for it",
                    )
                continue
            self._owner[host] = (cert_id, owner)
            if not cert_id:
                continue
            secret_namespace, _, secret_name = cert_id.partition("/")
            pem = self.load((secret_namespace, secret_name))
            if pem is None:
                continue
            uncovered = self.check(pem[0], pem[1], [host])
            if uncovered:
                report(
                    "warning",
                    where,
                    f'the certificate of Secret {cert_id} does not cover "{host}" (by its '
                    "subject alternative names); it gets the default certificate",
                )
                continue
            certificate = self.result.certificates.get(cert_id)
            if certificate is None:
                certificate = Certificate(cert_pem=pem[0].decode(), key_pem=pem[1].decode())
            self.result.certificates[cert_id] = Certificate(
                cert_pem=certificate.cert_pem,
                key_pem=certificate.key_pem,
                hosts=[*certificate.hosts, host],
            )

    def add_default(self, ref: str) -> None:
        namespace, _, name = ref.partition("/")
        where = "--default-ssl-certificate"
        if (namespace, name) not in self.secrets:
            self.result.problems.append(
                problems.error(
                    f"{where}: Secret {ref} not found; the self-signed certificate is used"
                )
            )
            return
        pem = self.load((namespace, name))
        if pem is None:
            return
        existing = self.result.certificates.get(ref)
        if existing is None:
            existing = Certificate(cert_pem=pem[0].decode(), key_pem=pem[1].decode())
            self.result.certificates[ref] = existing
        self.result.default_certificate = ref


def build_tls(
    snapshot: Snapshot,
    ingresses: list[tuple[Ingress, list[str]]],
    default_certificate: str | None,
    check: CertificateChecker | None,
) -> TlsResult:
    """The certificates for ``ingresses`` (ours, oldest first, each with its rule hosts)."""
    builder = _Builder(snapshot, check or structural_check)
    for ingress, rule_hosts in ingresses:
        builder.add_ingress(ingress, rule_hosts)
    if default_certificate:
        builder.add_default(default_certificate)
    return builder.result


__all__ = ["CertificateChecker", "TlsResult", "build_tls", "structural_check"]
