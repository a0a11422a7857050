#!/usr/bin/env bash
# Starts the example: upstream.py on 127.0.0.1:8000, the gateway on 127.0.0.1:8080 (admin on
# 9090). Ctrl-C stops both (the upstream by the PID this script started).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PSP_WEBHOOK_SECRET="${PSP_WEBHOOK_SECRET:-whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}"
python3 examples/gateway/upstream.py 8000 &
UPSTREAM=$!
trap 'kill "$UPSTREAM" 2>/dev/null || true' EXIT
cargo run --release -q -p retry-safe-gateway -- examples/gateway/gateway.toml
