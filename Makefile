# Every command a developer or CI needs. `make test` is what .ci/run calls.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: all quickstart install test lint rust-lint rust-test rust-audit py-lint py-test schema wheel

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Builds the release core once and installs silex (editable) with the test tools.
install: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

# Installs Silex and runs the bundled example: the proxy on :8080, echo backends behind it.
quickstart: $(BIN)/python
	$(BIN)/pip install --quiet .
	PATH="$(CURDIR)/$(BIN):$$PATH" examples/quickstart/run.sh

# The release wheel (abi3, manylinux x86_64) into dist/: the Dockerfile's builder runs the same.
wheel:
	$(if $(wildcard $(BIN)/maturin),$(BIN)/maturin,maturin) build --release --locked --out dist

# Every test, including the wheel built and installed into a fresh venv without Rust
# (a few minutes; `make py-test` alone skips it unless SILEX_TEST_WHEEL=1).
test: export SILEX_TEST_WHEEL = 1
test: install rust-lint rust-audit rust-test py-lint py-test

rust-lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

# Known vulnerabilities and unmaintained crates in Cargo.lock, against the offline RustSec
# snapshot next to the project (no network). Installs cargo-audit once (a few minutes).
ADVISORY_DB ?= ../shared/advisory-db
CARGO_AUDIT_VERSION = 0.22.1
rust-audit:
	@cargo audit --version 2>/dev/null | grep -q '$(CARGO_AUDIT_VERSION)' \
	  || cargo install --quiet --locked cargo-audit --version $(CARGO_AUDIT_VERSION)
	cargo audit --no-fetch --db $(ADVISORY_DB) --deny warnings

rust-test:
	cargo test --workspace --locked

py-lint:
	$(BIN)/ruff check python tests
	$(BIN)/ruff format --check python tests
	$(BIN)/mypy --strict python/silex
	$(BIN)/python -m mypy.stubtest silex._core

py-test:
	$(BIN)/pytest -q tests

# Rewrites schema/table.schema.json from the Rust types (the drift test fails until you do).
schema:
	SILEX_UPDATE_SCHEMA=1 cargo test -p silex-routing --test schema
