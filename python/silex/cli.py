"""The ``silex`` command: ``serve``, ``controller``, ``check``, ``routes``, ``echo``, ``--version``.

Every bad flag, value or path is one line on stderr (``silex: error: ...``) and exit status 2;
no command ever prints a traceback for a user mistake. ``serve`` and ``controller`` are the only
commands that load the Rust core (lazily), so the others work without it; both run the same
data-plane life cycle (:func:`_run_dataplane`), fed by manifest files or by the Kubernetes API.
"""

from __future__ import annotations

import dataclasses
import inspect
import ipaddress
import json
import logging
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import anyio
import anyio.to_thread
import typer
from anyio.abc import TaskStatus
from rich.console import Console

from silex import __version__
from silex.controller import DEFAULT_DEBOUNCE_S, Controller
from silex.echo import make_echo_server
from silex.logs import LOG_FORMATS, LogFormat, announce, fatal, setup_logging
from silex.metrics import OperatorMetrics, push_loop
from silex.problems import Problem, has_errors
from silex.sources.files import Loader, load_snapshot, watch_snapshots
from silex.statuspage import StatusPublisher
from silex.table import RouteDefaults, to_json
from silex.translate import TranslateOptions, owned_ingresses, translate
from silex.translate.options import (
    DEFAULT_CONTROLLER_NAME,
    DEFAULT_ELECTION_ID,
    DEFAULT_INGRESS_CLASS,
)
from silex.units import parse_duration_ms, parse_duration_s, parse_size

if TYPE_CHECKING:
    from silex.cluster import ClusterSettings

USAGE_ERROR: Final = 2
LOG_LEVELS: Final = ("debug", "info", "warning", "error")

log = logging.getLogger("silex")

app = typer.Typer(
    name="silex",
    help="Silex: a Kubernetes Ingress controller with a Rust data plane.",
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
)


# --- shared helpers -----------------------------------------------------------------------


def _fail(message: str, code: int = 1) -> typer.Exit:
    fatal(message)
    return typer.Exit(code)


def _bad_value(flag: str, message: str) -> typer.BadParameter:
    return typer.BadParameter(message, param_hint=f"'{flag}'")


def _duration_s(flag: str, text: str, *, allow_zero: bool = False) -> float:
    try:
        value = parse_duration_s(text)
    except ValueError as exc:
        raise _bad_value(flag, str(exc)) from None
    if value <= 0 and not allow_zero:
        raise _bad_value(flag, f"{text!r} must be greater than 0")
    return value


def _duration_ms(flag: str, text: str) -> int:
    _duration_s(flag, text)
    value = parse_duration_ms(text)
    if value <= 0:
        raise _bad_value(flag, f"{text!r} must be at least 1ms")
    return value


def _size(flag: str, text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise _bad_value(flag, str(exc)) from None


def _manifests_path(path: Path) -> Path:
    if not path.exists():
        raise _bad_value("--manifests", f"{path}: no such file or directory")
    if path.is_file():
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise _bad_value("--manifests", f"{path}: {exc.strerror or exc}") from None
    return path


def _core_version() -> str | None:
    try:
        from silex import _core  # noqa: PLC0415 (optional: only to report its version)
    except ImportError:
        return None
    return _core.__version__


def _version_callback(value: bool) -> None:
    if value:
        core = _core_version()
        print(f"silex {__version__}" + (f" (core {core})" if core else ""))
        raise typer.Exit(0)


ManifestsOption = Annotated[
    Path,
    typer.Option(
        "--manifests",
        "-f",
        help="A manifest file or a folder of them (*.yaml, *.yml, *.json).",
        show_default=False,
    ),
]
IngressClassOption = Annotated[
    str, typer.Option("--ingress-class", help="The IngressClass name this controller serves.")
]
WithoutClassOption = Annotated[
    bool,
    typer.Option("--watch-ingress-without-class", help="Also serve Ingresses that name no class."),
]


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Silex: a Kubernetes Ingress controller with a Rust data plane."""


# --- check / routes -----------------------------------------------------------------------


def _print_problems(problems: list[Problem], console: Console) -> None:
    for problem in problems:
        console.print(
            str(problem),
            style="red" if problem.is_error else "yellow",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def _checked_manifests(manifests: Path, options: TranslateOptions) -> tuple[list[Problem], str]:
    """Every Problem in the manifests (loading and translation) and a one-line summary."""
    snapshot, problems = load_snapshot(manifests)
    table, translate_problems = translate(snapshot, options)
    for problem in translate_problems:
        problems.append(
            problem.with_source(snapshot.source_of(problem.kind, problem.namespace, problem.name))
        )
    routes = sum(len(host.routes) for host in table.hosts)
    summary = f"{len(owned_ingresses(snapshot, options))} ingresses, {routes} routes"
    return problems, summary


@app.command()
def check(
    manifests: ManifestsOption,
    ingress_class: IngressClassOption = DEFAULT_INGRESS_CLASS,
    watch_ingress_without_class: WithoutClassOption = False,
) -> None:
    """Report every problem in the manifests; exit 1 if any is an error."""
    options = TranslateOptions(
        ingress_class=ingress_class, watch_ingress_without_class=watch_ingress_without_class
    )
    problems, summary = _checked_manifests(_manifests_path(manifests), options)
    console = Console(highlight=False)
    _print_problems(problems, console)
    if has_errors(problems):
        errors = sum(problem.is_error for problem in problems)
        console.print(f"{errors} error(s); {summary}", markup=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"ok: {summary}", markup=False, soft_wrap=True)


@app.command()
def routes(
    manifests: ManifestsOption,
    ingress_class: IngressClassOption = DEFAULT_INGRESS_CLASS,
    watch_ingress_without_class: WithoutClassOption = False,
) -> None:
    """Print the routing table the manifests translate to (JSON); problems go to stderr."""
    options = TranslateOptions(
        ingress_class=ingress_class, watch_ingress_without_class=watch_ingress_without_class
    )
    snapshot, problems = load_snapshot(_manifests_path(manifests))
    table, translate_problems = translate(snapshot, options)
    problems += [
        problem.with_source(snapshot.source_of(problem.kind, problem.namespace, problem.name))
        for problem in translate_problems
    ]
    _print_problems(problems, Console(stderr=True, highlight=False))
    data = json.loads(to_json(table))
    for certificate in data.get("certificates", {}).values():
        certificate["key_pem"] = "<redacted>"  # never print private keys
    print(json.dumps(data, indent=2))


# --- echo ---------------------------------------------------------------------------------


@app.command()
def echo(
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port (0: any free).")],
    name: Annotated[str, typer.Option("--name", help='Reported as "service".')] = "echo",
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
) -> None:
    """Run an echo backend answering every request with JSON describing it."""
    try:
        server = make_echo_server(name, host, port)
    except OSError as exc:
        raise _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    bound_port = server.server_address[1]
    print(f"silex: echo {name} listening on {host}:{bound_port}", file=sys.stderr, flush=True)
    for signum in (signal.SIGTERM, signal.SIGINT):  # SIGINT too: `&` jobs inherit it ignored
        signal.signal(signum, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()


# --- serve and controller: the shared data-plane runner -------------------------------


@dataclass(frozen=True)
class TlsSettings:
    """The TLS flags shared by ``serve`` and ``controller`` (see docs/tls.md)."""

    https_port: int | None = None
    """Port of the HTTPS listener; ``None``: no HTTPS listener."""
    default_ssl_certificate: str | None = None
    enable_h2c: bool = False
    https_redirect_port: int | None = None
    """Port in HTTP->HTTPS redirects; ``None``: the bound HTTPS port."""
    hsts_max_age_s: int | None = None
    hsts_include_subdomains: bool = False


@dataclass(frozen=True)
class ServeSettings:
    """Everything the data plane needs (shared by ``serve`` and ``controller``), validated."""

    listen_address: str
    http_port: int
    admin_port: int
    grace_period_s: float
    debounce_s: float
    options: TranslateOptions
    workers: int | None
    upstream_connect_timeout_ms: int
    upstream_send_timeout_ms: int
    header_read_timeout_ms: int
    client_idle_timeout_ms: int
    max_header_bytes: int
    max_headers: int
    trusted_proxies: tuple[str, ...]
    status_page: bool = True
    outlier_consecutive_failures: int = 5
    """Passive ejection: failures in a row that eject an endpoint (0: off)."""
    outlier_base_ejection_ms: int = 10_000
    outlier_max_ejection_ms: int = 300_000
    tls: TlsSettings = dataclasses.field(default_factory=TlsSettings)
    access_log: str = "stdout"
    """"off", "stdout" or a file path."""
    access_log_format: Literal["json", "combined"] = "json"


HttpsPortOption = Annotated[
    int, typer.Option(min=0, max=65535, help="HTTPS port (TLS with SNI; HTTP/2 via ALPN).")
]
DefaultSslCertificateOption = Annotated[
    str | None,
    typer.Option(
        "--default-ssl-certificate",
        help="NAMESPACE/NAME of the kubernetes.io/tls Secret served for unknown SNI "
        "(default: a self-signed certificate generated at start).",
    ),
]
HstsOption = Annotated[
    bool, typer.Option("--hsts", help="Send Strict-Transport-Security on HTTPS responses.")
]
HstsMaxAgeOption = Annotated[
    int, typer.Option("--hsts-max-age", min=0, help="HSTS max-age in seconds.")
]
HstsIncludeSubdomainsOption = Annotated[
    bool, typer.Option("--hsts-include-subdomains", help="Add includeSubDomains to HSTS.")
]
HttpsRedirectPortOption = Annotated[
    int | None,
    typer.Option(
        "--https-redirect-port",
        min=1,
        max=65535,
        help="Port clients use for HTTPS, written into HTTP->HTTPS redirects, when it differs "
        "from --https-port (e.g. a Service mapping 443 to 8443). Default: --https-port.",
    ),
]
EnableH2cOption = Annotated[
    bool,
    typer.Option("--enable-h2c", help="Serve HTTP/2 with prior knowledge on the HTTP port."),
]


def _tls_settings(
    settings: ServeSettings,
    *,
    https_port: int,
    default_ssl_certificate: str | None,
    hsts: bool,
    hsts_max_age: int,
    hsts_include_subdomains: bool,
    enable_h2c: bool,
    https_redirect_port: int | None,
) -> ServeSettings:
    """``settings`` with the TLS flags applied (validated)."""
    if default_ssl_certificate is not None:
        namespace, slash, name = default_ssl_certificate.partition("/")
        if not (slash and namespace and name) or "/" in name:
            raise _bad_value(
                "--default-ssl-certificate",
                f"{default_ssl_certificate!r} is not NAMESPACE/NAME",
            )
    tls = TlsSettings(
        https_port=https_port,
        default_ssl_certificate=default_ssl_certificate,
        enable_h2c=enable_h2c,
        https_redirect_port=https_redirect_port,
        hsts_max_age_s=hsts_max_age if hsts else None,
        hsts_include_subdomains=hsts_include_subdomains,
    )
    options = dataclasses.replace(settings.options, default_ssl_certificate=default_ssl_certificate)
    return dataclasses.replace(settings, tls=tls, options=options)


class _SignalLatch:
    """Records SIGTERM/SIGINT from start-up on, so none is lost before the event loop runs."""

    def __init__(self) -> None:
        self.received: int | None = None
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received = signum


def _announce(listener: str, address: tuple[str, int]) -> None:
    announce(
        f"listening {listener} on {address[0]}:{address[1]}",
        listener=listener,
        address=f"{address[0]}:{address[1]}",
    )


class _SourceFailed(Exception):
    """The source of objects cannot start; its message is the one-line error."""


Source = Callable[[Controller, anyio.Event, TaskStatus[None]], Awaitable[None]]
"""Feeds ``controller``: applies the first table through ``controller.reconcile``, then calls
``task_status.started()``, then keeps reconciling until cancelled (or ``stop`` is set)."""


def _run_dataplane(settings: ServeSettings, source: Source, source_name: str) -> int:
    """The life of ``serve`` and ``controller``: admin listener, first table, http listener,
    reconcile until SIGTERM/SIGINT, then drain and exit 0. ``source_name`` describes where
    the objects come from (on the status page)."""
    latch = _SignalLatch()
    try:
        from silex import dataplane  # noqa: PLC0415 (lazy: only serve/controller need the core)
    except ImportError as exc:
        raise _fail(f"the Rust core (silex._core) is not available: {exc}") from None

    try:
        plane = dataplane.DataPlane(
            dataplane.ServerConfig(
                workers=settings.workers,
                upstream_connect_timeout_ms=settings.upstream_connect_timeout_ms,
                upstream_send_timeout_ms=settings.upstream_send_timeout_ms,
                header_read_timeout_ms=settings.header_read_timeout_ms,
                client_idle_timeout_ms=settings.client_idle_timeout_ms,
                max_header_bytes=settings.max_header_bytes,
                max_headers=settings.max_headers,
                trusted_proxies=settings.trusted_proxies,
                outlier_consecutive_failures=settings.outlier_consecutive_failures,
                outlier_base_ejection_ms=settings.outlier_base_ejection_ms,
                outlier_max_ejection_ms=settings.outlier_max_ejection_ms,
                enable_h2c=settings.tls.enable_h2c,
                https_redirect_port=settings.tls.https_redirect_port,
                hsts_max_age_s=settings.tls.hsts_max_age_s,
                hsts_include_subdomains=settings.tls.hsts_include_subdomains,
                status_page=settings.status_page,
                access_log=settings.access_log,
                access_log_format=settings.access_log_format,
            )
        )
    except dataplane.SilexError as exc:
        raise _fail(f"the core rejected the server settings: {exc}", USAGE_ERROR) from None
    address = settings.listen_address
    try:
        _announce("admin", plane.listen("admin", address, settings.admin_port, kind="admin"))
    except dataplane.ListenError as exc:
        plane.shutdown(0)
        raise _fail(str(exc)) from None
    # Secrets are checked by the core's own parser, so a table never carries a bad certificate.
    settings = dataclasses.replace(
        settings,
        options=dataclasses.replace(
            settings.options,
            check_certificate=dataplane.check_certificate,
            check_ca_certificates=dataplane.check_ca_certificates,
        ),
    )
    controller = Controller(
        plane.apply,
        settings.options,
        config_errors=(dataplane.ConfigError,),
        debounce_s=settings.debounce_s,
        metrics=OperatorMetrics(plane.set_operator_metrics),
        certificate_expiry=dataplane.certificate_not_after,
    )
    controller.observe(StatusPublisher(plane.set_operator_status, source_name).on_reconciled)
    failure: str | None = None

    async def run() -> None:
        nonlocal failure
        stop = anyio.Event()
        async with anyio.create_task_group() as group:

            async def until_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    if latch.received is None:
                        async for signum in signals:
                            latch.received = signum
                            break
                stop.set()
                group.cancel_scope.cancel()

            async def feed(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
                nonlocal failure
                try:
                    await source(controller, stop, task_status)
                except _SourceFailed as exc:
                    failure = str(exc)
                    group.cancel_scope.cancel()

            group.start_soon(until_signal)
            group.start_soon(push_loop, controller.metrics)
            await group.start(feed)
            try:
                _announce("http", plane.listen("http", address, settings.http_port, kind="proxy"))
                if settings.tls.https_port is not None:
                    _announce(
                        "https",
                        plane.listen("https", address, settings.tls.https_port, kind="https"),
                    )
            except dataplane.ListenError as exc:
                failure = str(exc)
                group.cancel_scope.cancel()
                return
        if failure is not None:
            return
        name = signal.Signals(latch.received or signal.SIGTERM).name
        log.info("%s received: draining (grace period %gs)", name, settings.grace_period_s)
        drained = await anyio.to_thread.run_sync(plane.shutdown, settings.grace_period_s)
        if not drained:
            log.warning("grace period over; unfinished requests were cut off")

    anyio.run(run)
    if failure is not None:
        plane.shutdown(0)
        raise _fail(failure)
    return 0


def _files_source(manifests: Path, debounce_s: float) -> Source:
    async def feed(
        controller: Controller, stop: anyio.Event, task_status: TaskStatus[None]
    ) -> None:
        loader = Loader(keep_last_good=True)
        controller.reconcile(*load_snapshot(manifests, loader))
        task_status.started()
        await controller.run(watch_snapshots(manifests, debounce_s, loader, stop))

    return feed


HttpPortOption = Annotated[int, typer.Option(min=0, max=65535, help="Proxy port.")]
AdminPortOption = Annotated[
    int, typer.Option(min=0, max=65535, help="Admin port (/healthz, /readyz, /metrics).")
]
ListenAddressOption = Annotated[str, typer.Option(help="Address both listeners bind.")]
WorkersOption = Annotated[
    int | None, typer.Option(min=1, help="Core worker threads (default: one per CPU).")
]
MaxBodySizeOption = Annotated[
    str, typer.Option(help="Default request body limit (nginx size; 0 = unlimited).")
]
UpstreamConnectTimeoutOption = Annotated[str, typer.Option(help="Default connect timeout.")]
OutlierFailuresOption = Annotated[
    int,
    typer.Option(
        min=0,
        help="Passive ejection: connect failures, resets or 5xx in a row that take an endpoint "
        "out of load balancing (0: off).",
    ),
]
OutlierBaseEjectionOption = Annotated[
    str, typer.Option(help="First ejection length; doubles with each ejection in a row.")
]
OutlierMaxEjectionOption = Annotated[str, typer.Option(help="Longest ejection.")]
UpstreamSendTimeoutOption = Annotated[
    str,
    typer.Option(help="Default time allowed between two writes of a request body upstream."),
]
UpstreamReadTimeoutOption = Annotated[
    str, typer.Option(help="Default time for the upstream to start answering.")
]
HeaderReadTimeoutOption = Annotated[
    str, typer.Option(help="Time a client has to send its request head.")
]
ClientIdleTimeoutOption = Annotated[
    str, typer.Option(help="Idle keep-alive client connections are closed after this.")
]
MaxHeaderBytesOption = Annotated[
    int, typer.Option(min=1, help="Largest request head accepted (bytes).")
]
MaxHeadersOption = Annotated[int, typer.Option(min=1, help="Most request headers accepted.")]
TrustedProxiesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--trusted-proxies", help="CIDR whose X-Forwarded-* headers are kept (repeatable)."
    ),
]
GracePeriodOption = Annotated[
    str, typer.Option(help="How long SIGTERM waits for in-flight requests.")
]
DebounceOption = Annotated[
    str,
    typer.Option(
        help="Rebuild rate limit: a change after a quiet moment is applied at once; in a "
        "burst, changes are batched into one rebuild per this period."
    ),
]
LogLevelOption = Annotated[str, typer.Option(help="debug, info, warning or error.")]
StatusPageOption = Annotated[
    bool,
    typer.Option(
        "--status-page/--no-status-page",
        help="Serve the read-only status page (/ and /api/status) on the admin port.",
    ),
]
AccessLogOption = Annotated[
    str,
    typer.Option(
        "--access-log",
        help="Where the access log goes (one line per request): stdout, off, or a file path.",
    ),
]
AccessLogFormatOption = Annotated[
    str,
    typer.Option(
        "--access-log-format",
        help="json (one object per line) or combined (nginx combined + ingress-nginx fields).",
    ),
]
ACCESS_LOG_FORMATS = ("json", "combined")

LogFormatOption = Annotated[
    str,
    typer.Option(
        help="text, or json: one JSON object per line (operator and core alike; see "
        "docs/controller.md)."
    ),
]


def _log_format(text: str) -> LogFormat:
    if text == "json":
        return "json"
    if text == "text":
        return "text"
    raise _bad_value("--log-format", f"{text!r} is not one of {', '.join(LOG_FORMATS)}")


def _serve_settings(
    *,
    http_port: int,
    admin_port: int,
    listen_address: str,
    workers: int | None,
    options: TranslateOptions,
    max_body_size: str,
    upstream_connect_timeout: str,
    upstream_send_timeout: str,
    upstream_read_timeout: str,
    header_read_timeout: str,
    client_idle_timeout: str,
    max_header_bytes: int,
    max_headers: int,
    trusted_proxies: list[str] | None,
    grace_period: str,
    debounce: str,
    log_level: str,
    status_page: bool,
    access_log: str,
    access_log_format: str,
    outlier_consecutive_failures: int,
    outlier_base_ejection: str,
    outlier_max_ejection: str,
) -> ServeSettings:
    """Validate the data-plane flags shared by ``serve`` and ``controller``."""
    if log_level.lower() not in LOG_LEVELS:
        raise _bad_value("--log-level", f"{log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    if access_log_format not in ACCESS_LOG_FORMATS:
        raise _bad_value(
            "--access-log-format",
            f"{access_log_format!r} is not one of {', '.join(ACCESS_LOG_FORMATS)}",
        )
    if not access_log:
        raise _bad_value("--access-log", "must be stdout, off or a file path")
    proxies: list[str] = []
    for cidr in trusted_proxies or []:
        try:
            proxies.append(str(ipaddress.ip_network(cidr, strict=False)))
        except ValueError:
            raise _bad_value("--trusted-proxies", f"{cidr!r} is not a CIDR") from None
    try:
        ipaddress.ip_address(listen_address)
    except ValueError:
        raise _bad_value("--listen-address", f"{listen_address!r} is not an IP address") from None
    base_ejection_ms = _duration_ms("--outlier-base-ejection", outlier_base_ejection)
    max_ejection_ms = _duration_ms("--outlier-max-ejection", outlier_max_ejection)
    if max_ejection_ms < base_ejection_ms:
        raise _bad_value(
            "--outlier-max-ejection",
            f"{outlier_max_ejection!r} is shorter than --outlier-base-ejection",
        )
    defaults = RouteDefaults(
        max_request_body_bytes=_size("--max-body-size", max_body_size),
        upstream_read_timeout_ms=_duration_ms("--upstream-read-timeout", upstream_read_timeout),
    )
    return ServeSettings(
        listen_address=listen_address,
        http_port=http_port,
        admin_port=admin_port,
        grace_period_s=_duration_s("--grace-period", grace_period, allow_zero=True),
        debounce_s=_duration_s("--debounce", debounce, allow_zero=True),
        options=dataclasses.replace(options, defaults=defaults),
        workers=workers,
        upstream_connect_timeout_ms=_duration_ms(
            "--upstream-connect-timeout", upstream_connect_timeout
        ),
        upstream_send_timeout_ms=_duration_ms("--upstream-send-timeout", upstream_send_timeout),
        header_read_timeout_ms=_duration_ms("--header-read-timeout", header_read_timeout),
        client_idle_timeout_ms=_duration_ms("--client-idle-timeout", client_idle_timeout),
        max_header_bytes=max_header_bytes,
        max_headers=max_headers,
        trusted_proxies=tuple(proxies),
        status_page=status_page,
        access_log=access_log,
        access_log_format="combined" if access_log_format == "combined" else "json",
        outlier_consecutive_failures=outlier_consecutive_failures,
        outlier_base_ejection_ms=base_ejection_ms,
        outlier_max_ejection_ms=max_ejection_ms,
    )


def _dataplane_settings(flags: dict[str, Any], options: TranslateOptions) -> ServeSettings:
    """The validated data-plane settings from a command's flags.

    ``serve`` and ``controller`` declare the same data-plane flags (typer needs them in each
    signature) and pass their ``locals()`` here, so the flags are validated and mapped in one
    place: :func:`_serve_settings` and :func:`_tls_settings` take exactly their own names.
    """
    settings = _serve_settings(options=options, **{name: flags[name] for name in _SERVE_FLAGS})
    return _tls_settings(settings, **{name: flags[name] for name in _TLS_FLAGS})


_SERVE_FLAGS: Final = tuple(
    name for name in inspect.signature(_serve_settings).parameters if name != "options"
)
_TLS_FLAGS: Final = tuple(
    name for name in inspect.signature(_tls_settings).parameters if name != "settings"
)


@app.command()
def serve(
    *,
    manifests: ManifestsOption,
    http_port: HttpPortOption = 8080,
    admin_port: AdminPortOption = 10254,
    listen_address: ListenAddressOption = "0.0.0.0",
    workers: WorkersOption = None,
    ingress_class: IngressClassOption = DEFAULT_INGRESS_CLASS,
    watch_ingress_without_class: WithoutClassOption = False,
    max_body_size: MaxBodySizeOption = "1m",
    upstream_connect_timeout: UpstreamConnectTimeoutOption = "5s",
    upstream_send_timeout: UpstreamSendTimeoutOption = "60s",
    upstream_read_timeout: UpstreamReadTimeoutOption = "60s",
    outlier_consecutive_failures: OutlierFailuresOption = 5,
    outlier_base_ejection: OutlierBaseEjectionOption = "10s",
    outlier_max_ejection: OutlierMaxEjectionOption = "300s",
    header_read_timeout: HeaderReadTimeoutOption = "10s",
    client_idle_timeout: ClientIdleTimeoutOption = "75s",
    max_header_bytes: MaxHeaderBytesOption = 32768,
    max_headers: MaxHeadersOption = 100,
    trusted_proxies: TrustedProxiesOption = None,
    grace_period: GracePeriodOption = "30s",
    debounce: DebounceOption = f"{DEFAULT_DEBOUNCE_S}s",
    log_level: LogLevelOption = "info",
    status_page: StatusPageOption = True,
    log_format: LogFormatOption = "text",
    https_port: HttpsPortOption = 8443,
    default_ssl_certificate: DefaultSslCertificateOption = None,
    hsts: HstsOption = False,
    hsts_max_age: HstsMaxAgeOption = 31_536_000,
    hsts_include_subdomains: HstsIncludeSubdomainsOption = False,
    enable_h2c: EnableH2cOption = False,
    https_redirect_port: HttpsRedirectPortOption = None,
    access_log: AccessLogOption = "stdout",
    access_log_format: AccessLogFormatOption = "json",
) -> None:
    """Serve the manifests: proxy on --http-port (HTTP) and --https-port (TLS), admin on
    --admin-port; reload on change."""
    options = TranslateOptions(
        ingress_class=ingress_class, watch_ingress_without_class=watch_ingress_without_class
    )
    settings = _dataplane_settings(locals(), options)
    path = _manifests_path(manifests)
    source = _files_source(path, settings.debounce_s)
    setup_logging(log_level, _log_format(log_format))
    raise typer.Exit(_run_dataplane(settings, source, f"manifests in {path}"))


# --- controller ---------------------------------------------------------------------------


def _cluster_source(cluster: ClusterSettings) -> Source:
    from silex.cluster import ClusterFailed, run_cluster  # noqa: PLC0415 (see controller())

    async def feed(
        controller: Controller, _stop: anyio.Event, task_status: TaskStatus[None]
    ) -> None:
        try:
            await run_cluster(controller, cluster, task_status=task_status)
        except ClusterFailed as exc:
            raise _SourceFailed(str(exc)) from None

    return feed


@app.command()
def controller(
    *,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            help="Kubeconfig to use (default: in-cluster config when KUBERNETES_SERVICE_HOST "
            "is set, else $KUBECONFIG or ~/.kube/config).",
            show_default=False,
        ),
    ] = None,
    ingress_class: IngressClassOption = DEFAULT_INGRESS_CLASS,
    controller_name: Annotated[
        str,
        typer.Option(help="IngressClasses whose spec.controller is this are ours."),
    ] = DEFAULT_CONTROLLER_NAME,
    watch_namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--watch-namespace",
            help="Only watch this namespace (repeatable; default: all namespaces).",
            show_default=False,
        ),
    ] = None,
    watch_ingress_without_class: WithoutClassOption = False,
    publish_service: Annotated[
        str | None,
        typer.Option(
            help="NAMESPACE/NAME of the Service whose load-balancer addresses (else ClusterIP) "
            "go into our Ingresses' status.",
            show_default=False,
        ),
    ] = None,
    publish_status_address: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated IPs or host names to put into our Ingresses' status "
            "(instead of --publish-service).",
            show_default=False,
        ),
    ] = None,
    election_id: Annotated[
        str, typer.Option(help="Name of the Lease used for leader election.")
    ] = DEFAULT_ELECTION_ID,
    election_namespace: Annotated[
        str | None,
        typer.Option(
            help="Namespace of the Lease (default: $POD_NAMESPACE, else default).",
            show_default=False,
        ),
    ] = None,
    pod_name: Annotated[
        str | None,
        typer.Option(
            help="Our identity in the election (default: $POD_NAME, else hostname_pid).",
            show_default=False,
        ),
    ] = None,
    lease_duration: Annotated[
        str, typer.Option(help="How long a Lease holds without renewal.")
    ] = "15s",
    renew_deadline: Annotated[
        str, typer.Option(help="The leader steps down if it cannot renew within this.")
    ] = "10s",
    retry_period: Annotated[str, typer.Option(help="Interval of election attempts.")] = "2s",
    watch_timeout: Annotated[
        str, typer.Option(help="Server-side timeout of each watch request (then re-watch).")
    ] = "300s",
    http_port: HttpPortOption = 80,
    admin_port: AdminPortOption = 10254,
    listen_address: ListenAddressOption = "0.0.0.0",
    workers: WorkersOption = None,
    max_body_size: MaxBodySizeOption = "1m",
    upstream_connect_timeout: UpstreamConnectTimeoutOption = "5s",
    upstream_send_timeout: UpstreamSendTimeoutOption = "60s",
    upstream_read_timeout: UpstreamReadTimeoutOption = "60s",
    outlier_consecutive_failures: OutlierFailuresOption = 5,
    outlier_base_ejection: OutlierBaseEjectionOption = "10s",
    outlier_max_ejection: OutlierMaxEjectionOption = "300s",
    header_read_timeout: HeaderReadTimeoutOption = "10s",
    client_idle_timeout: ClientIdleTimeoutOption = "75s",
    max_header_bytes: MaxHeaderBytesOption = 32768,
    max_headers: MaxHeadersOption = 100,
    trusted_proxies: TrustedProxiesOption = None,
    grace_period: GracePeriodOption = "30s",
    debounce: DebounceOption = f"{DEFAULT_DEBOUNCE_S}s",
    log_level: LogLevelOption = "info",
    status_page: StatusPageOption = True,
    log_format: LogFormatOption = "text",
    https_port: HttpsPortOption = 443,
    default_ssl_certificate: DefaultSslCertificateOption = None,
    hsts: HstsOption = False,
    hsts_max_age: HstsMaxAgeOption = 31_536_000,
    hsts_include_subdomains: HstsIncludeSubdomainsOption = False,
    enable_h2c: EnableH2cOption = False,
    https_redirect_port: HttpsRedirectPortOption = None,
    access_log: AccessLogOption = "stdout",
    access_log_format: AccessLogFormatOption = "json",
) -> None:
    """Serve the cluster's Ingresses of our class; the leader writes status and Events."""
    options = TranslateOptions(
        ingress_class=ingress_class,
        controller_name=controller_name,
        watch_ingress_without_class=watch_ingress_without_class,
    )
    settings = _dataplane_settings(locals(), options)
    if publish_service is not None and publish_status_address is not None:
        raise _bad_value(
            "--publish-service", "use either --publish-service or --publish-status-address"
        )
    # Cluster mode is imported here, not at the top: kubernetes-asyncio and aiohttp cost about
    # 55 MiB of RSS that `silex serve` never needs.
    from silex.cluster import ClusterSettings  # noqa: PLC0415
    from silex.leader import ElectionSettings, default_identity, default_namespace  # noqa: PLC0415
    from silex.sources.kube import WatchSettings  # noqa: PLC0415
    from silex.status import StatusSource, parse_addresses, parse_service_ref  # noqa: PLC0415

    status: StatusSource | None = None
    try:
        if publish_service is not None:
            status = StatusSource(service=parse_service_ref(publish_service))
        elif publish_status_address is not None:
            status = StatusSource(addresses=parse_addresses(publish_status_address))
    except ValueError as exc:
        flag = "--publish-service" if publish_service else "--publish-status-address"
        raise _bad_value(flag, str(exc)) from None
    if kubeconfig is not None and not kubeconfig.is_file():
        raise _bad_value("--kubeconfig", f"{kubeconfig}: no such file")
    lease_s = _duration_s("--lease-duration", lease_duration)
    renew_s = _duration_s("--renew-deadline", renew_deadline)
    if renew_s >= lease_s:
        raise _bad_value("--renew-deadline", "must be shorter than --lease-duration")
    watch_timeout_s = max(1, round(_duration_s("--watch-timeout", watch_timeout)))
    cluster = ClusterSettings(
        kubeconfig=str(kubeconfig) if kubeconfig is not None else None,
        watch=WatchSettings(
            namespaces=tuple(dict.fromkeys(watch_namespace or ())),
            watch_timeout_s=watch_timeout_s,
        ),
        election=ElectionSettings(
            name=election_id,
            namespace=election_namespace or default_namespace(),
            identity=pod_name or default_identity(),
            lease_duration_s=lease_s,
            renew_deadline_s=renew_s,
            retry_period_s=_duration_s("--retry-period", retry_period),
        ),
        status=status,
    )
    setup_logging(log_level, _log_format(log_format))
    scope = ", ".join(cluster.watch.namespaces) or "all namespaces"
    source_name = f"Kubernetes API ({scope})"
    raise typer.Exit(_run_dataplane(settings, _cluster_source(cluster), source_name))


# --- entry point --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (usage errors: one line on stderr, status 2)."""
    try:
        result = app(args=argv, prog_name="silex", standalone_mode=False)
    except typer.TyperException as exc:
        print(f"silex: error: {exc.format_message()}", file=sys.stderr, flush=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("silex: aborted", file=sys.stderr, flush=True)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
