#!/usr/bin/env bash
# Silex quickstart: two echo backends and the proxy in front of them. Ctrl-C stops all three.
#   proxy  http://127.0.0.1:8080   (admin: http://127.0.0.1:10254/readyz)
#   coffee 127.0.0.1:9001, tea 127.0.0.1:9002
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

silex echo --port 9001 --name coffee &
pids+=("$!")
silex echo --port 9002 --name tea &
pids+=("$!")

echo "try: curl -H 'Host: cafe.example.com' http://127.0.0.1:8080/tea" >&2
# In the background plus `wait`, so a SIGTERM to this script stops everything at once.
silex serve --manifests "$here/manifests.yaml" --listen-address 127.0.0.1 &
pids+=("$!")
wait "$!"
