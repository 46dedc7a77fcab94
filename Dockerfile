# syntax=docker/dockerfile:1
# Silex container image: `docker build -t silex:0.1.0 .` from the repository root.
#
# Stage 1 builds the abi3 wheel with maturin (the same command as `make wheel`);
# stage 2 installs only that wheel on a slim Python base: no Rust toolchain, no sources.
# Both stages are Debian bookworm, so the wheel's glibc requirement is met by the runtime.

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${RUST_IMAGE} AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# maturin needs a Python 3.11 interpreter to tag the abi3 wheel; bookworm's python3 is 3.11.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3='3.11.*' python3-venv='3.11.*' \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/maturin \
    && /opt/maturin/bin/pip install --no-cache-dir maturin==1.16.0
WORKDIR /src
COPY Cargo.toml Cargo.lock pyproject.toml README.md LICENSE ./
COPY rust/ rust/
COPY python/ python/
RUN /opt/maturin/bin/maturin build --release --locked --out /dist

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="silex" \
      org.opencontainers.image.description="Kubernetes Ingress controller: a Python operator driving a Rust (hyper/Tokio) data plane" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=builder /dist/ /tmp/dist/
RUN pip install --no-cache-dir /tmp/dist/silex-*.whl \
    && rm -rf /tmp/dist \
    && silex --version
# Unprivileged ports: the proxy listens on 8080 (HTTP) and 8443 (HTTPS), the admin endpoints
# (/healthz, /readyz, /metrics) on 10254; the Kubernetes Service maps 80/443 to 8080/8443.
EXPOSE 8080 8443 10254
# A numeric UID/GID (no passwd entry needed) so `runAsNonRoot` can verify it.
USER 65532:65532
# Exec form: `silex` is PID 1 and receives SIGTERM itself (it drains, then exits 0). It starts
# no child processes, so no init (tini) is needed to reap zombies.
ENTRYPOINT ["silex"]
CMD ["controller", "--http-port", "8080", "--https-port", "8443", "--admin-port", "10254"]
