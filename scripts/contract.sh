#!/usr/bin/env bash
# The contract check: starts siemsync as the README does (the shipped config, on a
# fresh data directory and a free port), validates the OpenAPI document it serves with
# openapi-spec-validator, and runs schemathesis against it: every check, positive and
# negative cases, and the stateful mode that follows the document's links (account on
# → create → read → change → status → delete). Exits non-zero on any failure.
#
#   scripts/contract.sh            # what .ci/run runs after cargo test
#   CONTRACT_EXAMPLES=50 scripts/contract.sh   # cases per operation and phase (default 30)
#
# siemsync and schemathesis run in a network namespace of their own with loopback
# only: the HEC URIs schemathesis makes up are accepted (private destinations are
# allowed, so integrations can be created at all), and every connection they lead to
# fails inside the namespace instead of reaching any other machine.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${CONTRACT_VENV:-target/contract-venv}
examples=${CONTRACT_EXAMPLES:-30}

if [ -z "${CONTRACT_IN_NETNS:-}" ]; then
  if [ "$("$venv/bin/st" --version 2>/dev/null)" != "st, version 4.32.5" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/contract-requirements.txt
  fi
  # The service as `cargo run -- run` builds it (no test hooks).
  cargo build --locked --quiet --bin siemsync
  command -v unshare >/dev/null || { echo "contract: unshare (util-linux) is needed" >&2; exit 1; }
  exec unshare --net env CONTRACT_IN_NETNS=1 "$0" "$@"
fi

ip link set lo up
data=$(mktemp -d)
log=$(mktemp)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
SIEMSYNC_LISTEN=127.0.0.1:$port SIEMSYNC_DATA_DIR=$data SIEMSYNC_ALLOW_PRIVATE_DESTINATIONS=true \
  target/debug/siemsync run --config config/siemsync.toml >"$log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT
for _ in $(seq 100); do
  curl -fsS "$url/healthz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "contract: siemsync did not start" >&2; exit 1; }
  sleep 0.1
done

curl -fsS "$url/api/v1/openapi.json" -o "$data/openapi.json"
"$venv/bin/openapi-spec-validator" "$data/openapi.json"

# Step 1 of the README's flow, so that the examples' account can have integrations.
curl -fsS -X PUT -H 'Authorization: Bearer dev-admin-token-change-me' \
  "$url/api/v1/accounts/acme" -d '{"siem_enabled": true}' >/dev/null

report=$(mktemp)
set +e
"$venv/bin/st" --config-file scripts/schemathesis.toml run "$url/api/v1/openapi.json" \
  --checks all --mode all --phases examples,coverage,fuzzing,stateful \
  --max-examples "$examples" --seed 19 --no-color \
  -H 'Authorization: Bearer dev-admin-token-change-me' \
  2>&1 | tee "$report"
status=${PIPESTATUS[0]}
set -e
cases=$(sed -n 's/^ *\([0-9][0-9]*\) generated.*/\1/p' "$report" | tail -1)
failed=$(sed -n 's/^=* *\([0-9][0-9]*\) failures\{0,1\}[ ,].*/\1/p' "$report" | tail -1)
echo "contract: schemathesis generated ${cases:-no} test cases"
echo "contract: $(( ${cases:-0} - ${failed:-0} )) passed, ${failed:-0} failed"
if [ "${cases:-0}" -lt 1000 ]; then
  echo "contract: fewer than 1,000 generated cases: raise CONTRACT_EXAMPLES" >&2
  status=1
fi
if ! kill -0 "$pid" 2>/dev/null; then
  tail -50 "$log" >&2
  echo "contract: siemsync died during the run" >&2
  exit 1
fi
rm -f "$report"
exit $status
