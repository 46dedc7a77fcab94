"""The ``silex`` command: ``serve``, ``check``, ``routes``, ``echo`` and ``--version``.

Every bad flag, value or path is one line on stderr (``silex: error: ...``) and exit status 2;
no command ever prints a traceback for a user mistake. ``serve`` is the only command that loads
the Rust core (lazily), so the others work without it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Annotated, Final

import anyio
import anyio.to_thread
import typer
from rich.console import Console

from silex import __version__
from silex.controller import DEFAULT_DEBOUNCE_S, Controller
from silex.echo import make_echo_server
from silex.problems import Problem, has_errors
from silex.sources.files import Loader, load_snapshot, watch_snapshots
from silex.table import RouteDefaults, to_json
from silex.translate import TranslateOptions, owned_ingresses, translate
from silex.translate.options import DEFAULT_INGRESS_CLASS
from silex.units import parse_duration_ms, parse_duration_s, parse_size

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
    print(f"silex: error: {message}", file=sys.stderr, flush=True)
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


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("silex: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level.upper())
    log.propagate = False


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
    print(json.dumps(json.loads(to_json(table)), indent=2))


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


# --- serve --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServeSettings:
    """Everything ``serve`` needs, validated."""

    manifests: Path
    listen_address: str
    http_port: int
    admin_port: int
    grace_period_s: float
    debounce_s: float
    options: TranslateOptions
    workers: int | None
    upstream_connect_timeout_ms: int
    header_read_timeout_ms: int
    client_idle_timeout_ms: int
    max_header_bytes: int
    max_headers: int
    trusted_proxies: tuple[str, ...]


class _SignalLatch:
    """Records SIGTERM/SIGINT from start-up on, so none is lost before the event loop runs."""

    def __init__(self) -> None:
        self.received: int | None = None
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received = signum


def _announce(listener: str, address: tuple[str, int]) -> None:
    print(f"silex: listening {listener} on {address[0]}:{address[1]}", file=sys.stderr, flush=True)


def _serve(settings: ServeSettings) -> int:
    latch = _SignalLatch()
    try:
        from silex import dataplane  # noqa: PLC0415 (lazy: only serve needs the core)
    except ImportError as exc:
        raise _fail(f"the Rust core (silex._core) is not available: {exc}") from None

    try:
        plane = dataplane.DataPlane(
            dataplane.ServerConfig(
                workers=settings.workers,
                upstream_connect_timeout_ms=settings.upstream_connect_timeout_ms,
                header_read_timeout_ms=settings.header_read_timeout_ms,
                client_idle_timeout_ms=settings.client_idle_timeout_ms,
                max_header_bytes=settings.max_header_bytes,
                max_headers=settings.max_headers,
                trusted_proxies=settings.trusted_proxies,
            )
        )
    except dataplane.SilexError as exc:
        raise _fail(f"the core rejected the server settings: {exc}", USAGE_ERROR) from None
    address = settings.listen_address
    try:
        _announce("admin", plane.listen("admin", address, settings.admin_port, kind="admin"))
        controller = Controller(
            plane.apply,
            settings.options,
            config_errors=(dataplane.ConfigError,),
            debounce_s=settings.debounce_s,
        )
        loader = Loader(keep_last_good=True)
        controller.reconcile(*load_snapshot(settings.manifests, loader))
        _announce("http", plane.listen("http", address, settings.http_port, kind="proxy"))
    except dataplane.ListenError as exc:
        plane.shutdown(0)
        raise _fail(str(exc)) from None

    async def run() -> None:
        stop_watching = anyio.Event()
        async with anyio.create_task_group() as group:
            group.start_soon(
                controller.run,
                watch_snapshots(settings.manifests, settings.debounce_s, loader, stop_watching),
            )
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                if latch.received is None:
                    async for signum in signals:
                        latch.received = signum
                        break
            stop_watching.set()
            group.cancel_scope.cancel()
        name = signal.Signals(latch.received or signal.SIGTERM).name
        log.info("%s received: draining (grace period %gs)", name, settings.grace_period_s)
        drained = await anyio.to_thread.run_sync(plane.shutdown, settings.grace_period_s)
        if not drained:
            log.warning("grace period over; unfinished requests were cut off")

    anyio.run(run)
    return 0


@app.command()
def serve(
    *,
    manifests: ManifestsOption,
    http_port: Annotated[int, typer.Option(min=0, max=65535, help="Proxy port.")] = 8080,
    admin_port: Annotated[
        int, typer.Option(min=0, max=65535, help="Admin port (/healthz, /readyz, /metrics).")
    ] = 10254,
    listen_address: Annotated[str, typer.Option(help="Address both listeners bind.")] = "0.0.0.0",
    workers: Annotated[
        int | None, typer.Option(min=1, help="Core worker threads (default: one per CPU).")
    ] = None,
    ingress_class: IngressClassOption = DEFAULT_INGRESS_CLASS,
    watch_ingress_without_class: WithoutClassOption = False,
    max_body_size: Annotated[
        str, typer.Option(help="Default request body limit (nginx size; 0 = unlimited).")
    ] = "1m",
    upstream_connect_timeout: Annotated[str, typer.Option(help="Default connect timeout.")] = "5s",
    upstream_read_timeout: Annotated[
        str, typer.Option(help="Default time for the upstream to start answering.")
    ] = "60s",
    header_read_timeout: Annotated[
        str, typer.Option(help="Time a client has to send its request head.")
    ] = "10s",
    client_idle_timeout: Annotated[
        str, typer.Option(help="Idle keep-alive client connections are closed after this.")
    ] = "75s",
    max_header_bytes: Annotated[
        int, typer.Option(min=1, help="Largest request head accepted (bytes).")
    ] = 32768,
    max_headers: Annotated[int, typer.Option(min=1, help="Most request headers accepted.")] = 100,
    trusted_proxies: Annotated[
        list[str] | None,
        typer.Option(
            "--trusted-proxies", help="CIDR whose X-Forwarded-* headers are kept (repeatable)."
        ),
    ] = None,
    grace_period: Annotated[
        str, typer.Option(help="How long SIGTERM waits for in-flight requests.")
    ] = "30s",
    debounce: Annotated[
        str, typer.Option(help="Quiet time after a change before the table is rebuilt.")
    ] = f"{DEFAULT_DEBOUNCE_S}s",
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve the manifests: proxy on --http-port, admin on --admin-port; reload on change."""
    if log_level.lower() not in LOG_LEVELS:
        raise _bad_value("--log-level", f"{log_level!r} is not one of {', '.join(LOG_LEVELS)}")
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
    defaults = RouteDefaults(
        max_request_body_bytes=_size("--max-body-size", max_body_size),
        upstream_read_timeout_ms=_duration_ms("--upstream-read-timeout", upstream_read_timeout),
    )
    settings = ServeSettings(
        manifests=_manifests_path(manifests),
        listen_address=listen_address,
        http_port=http_port,
        admin_port=admin_port,
        grace_period_s=_duration_s("--grace-period", grace_period, allow_zero=True),
        debounce_s=_duration_s("--debounce", debounce, allow_zero=True),
        options=TranslateOptions(
            ingress_class=ingress_class,
            watch_ingress_without_class=watch_ingress_without_class,
            defaults=defaults,
        ),
        workers=workers,
        upstream_connect_timeout_ms=_duration_ms(
            "--upstream-connect-timeout", upstream_connect_timeout
        ),
        header_read_timeout_ms=_duration_ms("--header-read-timeout", header_read_timeout),
        client_idle_timeout_ms=_duration_ms("--client-idle-timeout", client_idle_timeout),
        max_header_bytes=max_header_bytes,
        max_headers=max_headers,
        trusted_proxies=tuple(proxies),
    )
    _setup_logging(log_level)
    raise typer.Exit(_serve(settings))


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
