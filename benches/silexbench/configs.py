"""The same routing configuration, generated for Silex, nginx and haproxy.

Every host ``host-<i>.bench.test`` routes ``/`` to its own Service ``svc-<i>`` (nginx: its own
``upstream`` with keepalive, as ingress-nginx writes it; haproxy: its own backend behind a
Host map). All Services point at the one backend. Requests are aimed at the last host.
"""

from __future__ import annotations

import base64
import json
import resource
import subprocess
from pathlib import Path
from typing import Any

DOMAIN = "bench.test"
CHURN_HOST = f"churn.{DOMAIN}"
UPSTREAM_KEEPALIVE = 320  # ingress-nginx's upstream-keepalive-connections default


def host_name(index: int) -> str:
    return f"host-{index}.{DOMAIN}"


def target_host(hosts: int) -> str:
    """The host every request is aimed at: the last one generated."""
    return host_name(hosts - 1)


# --- Silex (Kubernetes manifests) ----------------------------------------------------------


def _silex_objects(name: str, host: str, backend_port: int) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": backend_port}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-1", "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": backend_port}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": name},
            "spec": {
                "ingressClassName": "silex",
                "rules": [
                    {
                        "host": host,
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": name, "port": {"number": 80}}},
                                }
                            ]
                        },
                    }
                ],
            },
        },
    ]


INGRESS_CLASS: dict[str, Any] = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "IngressClass",
    "metadata": {"name": "silex"},
    "spec": {"controller": "silex.dev/ingress-controller"},
}


TLS_SECRET = "default/bench-tls"


def write_certificate(directory: Path) -> tuple[Path, Path]:
    """One self-signed ECDSA P-256 certificate for *.bench.test, used by every proxy."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "30",
            "-subj", f"/CN={DOMAIN}", "-addext", f"subjectAltName=DNS:*.{DOMAIN},DNS:{DOMAIN}",
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    (directory / "combined.pem").write_bytes(cert.read_bytes() + key.read_bytes())  # haproxy
    return cert, key


def _tls_secret(cert: Path, key: Path) -> dict[str, Any]:
    namespace, name = TLS_SECRET.split("/")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(cert.read_bytes()).decode(),
            "tls.key": base64.b64encode(key.read_bytes()).decode(),
        },
    }


def write_silex(
    directory: Path, hosts: int, backend_port: int, tls: tuple[Path, Path] | None = None
) -> None:
    """``directory``/hosts.json: one ``kind: List`` (JSON loads far faster than YAML).

    With ``tls`` the certificate is a Secret served as the default certificate
    (``--default-ssl-certificate``): the Ingresses have no ``tls`` section, so plain HTTP is
    not redirected, as with nginx's and haproxy's configuration here.
    """
    directory.mkdir(parents=True, exist_ok=True)
    items: list[dict[str, Any]] = [INGRESS_CLASS]
    if tls is not None:
        items.append(_tls_secret(*tls))
    for index in range(hosts):
        items += _silex_objects(f"svc-{index}", host_name(index), backend_port)
    document = {"apiVersion": "v1", "kind": "List", "items": items}
    (directory / "hosts.json").write_text(json.dumps(document))


def silex_churn_yaml(backend_port: int) -> str:
    """The manifest of the host added and removed under load (YAML, as a user would edit)."""
    docs = _silex_objects("churn", CHURN_HOST, backend_port)
    return "\n---\n".join(json.dumps(doc) for doc in docs) + "\n"  # JSON is valid YAML


# --- nginx ---------------------------------------------------------------------------------

NGINX_TEMPLATE = """\
# Generated by benches/silexbench: ingress-nginx-like proxy configuration.
worker_processes {workers};
worker_rlimit_nofile 200000;
worker_shutdown_timeout 30s;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log error;
events {{
    worker_connections 16384;  # ingress-nginx's default (nginx preallocates them)
    multi_accept on;
}}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server_names_hash_max_size 65536;
    server_names_hash_bucket_size 128;
    variables_hash_bucket_size 256;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    reset_timedout_connection on;
    proxy_http_version 1.1;
    proxy_buffering on;
    proxy_request_buffering on;
    proxy_connect_timeout 5s;
    proxy_read_timeout 60s;
    proxy_set_header Connection "";
    proxy_set_header Host $host;
    proxy_set_header X-Real-IP $remote_addr;
    proxy_set_header X-Forwarded-For $remote_addr;
    proxy_set_header X-Forwarded-Host $host;
    proxy_set_header X-Forwarded-Port $server_port;
    proxy_set_header X-Forwarded-Proto $scheme;
    {tls_http}
    server {{
        listen 127.0.0.1:{port} default_server reuseport backlog=65535;
        {tls_listen_default}
        location / {{ return 404; }}
    }}
    include {tmp}/servers/*.conf;
}}
"""

NGINX_SERVER = """\
upstream {name} {{
    server 127.0.0.1:{backend_port} max_fails=0;
    keepalive {keepalive};
    keepalive_requests 1000000;
    keepalive_timeout 60s;
}}
server {{
    listen 127.0.0.1:{port};
    {tls_listen}
    server_name {host};
    location / {{ proxy_pass http://{name}; }}
}}
"""


def _nginx_tls(tls_port: int | None, cert_dir: Path | None) -> dict[str, str]:
    if tls_port is None or cert_dir is None:
        return {"tls_http": "", "tls_listen_default": "", "tls_listen": ""}
    return {  # what ingress-nginx sets: session cache, TLS 1.2 + 1.3, HTTP/2
        "tls_http": f"ssl_certificate {cert_dir}/cert.pem; "
        f"ssl_certificate_key {cert_dir}/key.pem; ssl_protocols TLSv1.2 TLSv1.3; "
        "ssl_session_cache shared:SSL:10m; ssl_session_timeout 10m;",
        "tls_listen_default": f"listen 127.0.0.1:{tls_port} ssl http2 default_server reuseport;",
        "tls_listen": f"listen 127.0.0.1:{tls_port} ssl http2;",
    }


def write_nginx_proxy(  # noqa: PLR0917 (internal helper, called positionally)
    tmp: Path,
    hosts: int,
    port: int,
    backend_port: int,
    workers: int,
    tls_port: int | None = None,
    cert_dir: Path | None = None,
) -> Path:
    (tmp / "servers").mkdir(parents=True, exist_ok=True)
    conf = tmp / "nginx.conf"
    tls = _nginx_tls(tls_port, cert_dir)
    conf.write_text(NGINX_TEMPLATE.format(workers=workers, tmp=tmp, port=port, **tls))
    blocks = [
        NGINX_SERVER.format(
            name=f"svc_{index}",
            host=host_name(index),
            port=port,
            backend_port=backend_port,
            keepalive=UPSTREAM_KEEPALIVE,
            tls_listen=tls["tls_listen"],
        )
        for index in range(hosts)
    ]
    (tmp / "servers" / "hosts.conf").write_text("".join(blocks))
    return conf


def nginx_churn_conf(port: int, backend_port: int) -> str:
    return NGINX_SERVER.format(
        name="svc_churn",
        host=CHURN_HOST,
        port=port,
        backend_port=backend_port,
        keepalive=UPSTREAM_KEEPALIVE,
        tls_listen="",
    )


BACKEND_TEMPLATE = """\
# Generated by benches/silexbench: the one backend every proxy forwards to.
worker_processes {workers};
worker_rlimit_nofile 200000;
daemon off;
pid {tmp}/backend.pid;
error_log {tmp}/backend-error.log error;
events {{ worker_connections 65000; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    open_file_cache max=16 inactive=600s;
    open_file_cache_valid 600s;
    keepalive_timeout 300s;
    keepalive_requests 10000000;
    server {{
        listen 127.0.0.1:{port} default_server backlog=65535;
        root {www};
    }}
}}
"""

BODIES = {"1k": 1024, "64k": 64 * 1024}


def write_www(www: Path) -> None:
    www.mkdir(parents=True, exist_ok=True)
    for name, size in BODIES.items():
        (www / name).write_bytes(b"x" * size)


def write_backend(tmp: Path, port: int, workers: int) -> Path:
    www = tmp / "www"
    write_www(www)
    conf = tmp / "backend.conf"
    conf.write_text(BACKEND_TEMPLATE.format(workers=workers, tmp=tmp, port=port, www=www))
    return conf


# --- haproxy -------------------------------------------------------------------------------

HAPROXY_TEMPLATE = """\
# Generated by benches/silexbench: Host map -> one backend per Service.
global
    nbthread {threads}
    maxconn {maxconn}
    hard-stop-after 30s
    stats socket {tmp}/admin.sock mode 600 level admin expose-fd listeners
defaults
    mode http
    timeout connect 5s
    timeout client 75s
    timeout server 60s
    timeout http-keep-alive 75s
    option forwardfor
    http-reuse safe
frontend fe
    bind 127.0.0.1:{port} backlog 65535
    {tls_bind}
    use_backend %[req.hdr(host),lower,map({tmp}/hosts.map)]
    default_backend be_none
backend be_none
    http-request return status 404
"""

HAPROXY_BACKEND = """\
backend {name}
    server s1 127.0.0.1:{backend_port} pool-max-conn {keepalive}
"""


def write_haproxy(  # noqa: PLR0917 (internal helper, called positionally)
    tmp: Path,
    hosts: int,
    port: int,
    backend_port: int,
    threads: int,
    churn: bool = False,
    tls_port: int | None = None,
    cert_dir: Path | None = None,
) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    names = [(host_name(index), f"svc_{index}") for index in range(hosts)]
    if churn:
        names.append((CHURN_HOST, "svc_churn"))
    # haproxy refuses to start if maxconn needs more descriptors than it may open
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    maxconn = max(1000, min(60_000, (nofile - 200) // 2))
    tls_bind = (
        f"bind 127.0.0.1:{tls_port} ssl crt {cert_dir}/combined.pem alpn h2,http/1.1"
        if tls_port is not None and cert_dir is not None
        else ""
    )
    lines = [
        HAPROXY_TEMPLATE.format(
            threads=threads, tmp=tmp, port=port, maxconn=maxconn, tls_bind=tls_bind
        )
    ]
    lines += [
        HAPROXY_BACKEND.format(name=name, backend_port=backend_port, keepalive=UPSTREAM_KEEPALIVE)
        for _, name in names
    ]
    conf = tmp / "haproxy.cfg"
    conf.write_text("".join(lines))
    (tmp / "hosts.map").write_text("".join(f"{host} {name}\n" for host, name in names))
    return conf
