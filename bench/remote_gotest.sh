#!/usr/bin/env bash
# go test runs on casd: a generated module's `kiln test`, cold (empty kiln cache, Go's
# compile cache warm in both), here and with --remote-executor on a new casd, and where
# the time went (compile steps, here in both, vs test runs) from --json.
#
#   bench/remote_gotest.sh [--packages 30] [--runs 2]
#
# KILN_BIN picks the binary (default target/release/kiln, else target/debug/kiln).
set -euo pipefail
packages=30 runs=2
while [ $# -gt 0 ]; do
  case $1 in
    --packages) packages=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
here=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$here/target}
kiln=${KILN_BIN:-$target/release/kiln}
[ -x "$kiln" ] || kiln=$target/debug/kiln
work=$(mktemp -d)
casd_pid=
trap '[ -n "$casd_pid" ] && kill $casd_pid 2>/dev/null; rm -rf "$work"' EXIT
python3 "$here/bench/gen_go_module.py" "$work/ws" --packages "$packages" >/dev/null
export KILN_GO_CACHE=$work/gocache
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

start_casd() {
  [ -n "$casd_pid" ] && kill $casd_pid 2>/dev/null && wait $casd_pid 2>/dev/null || true
  rm -rf "$work/cas"; mkdir -p "$work/cas"
  buildbox-casd --bind=127.0.0.1:$port --buildbox-run="$(command -v buildbox-run)" --jobs=2 \
    --cache-failures=false --runner-arg=--ro-bind-mount=/usr:/usr \
    --runner-arg=--ro-bind-mount=/usr/bin:/bin --runner-arg=--ro-bind-mount=/usr/lib:/lib \
    --runner-arg=--ro-bind-mount=/usr/lib64:/lib64 "$work/cas" >"$work/casd.log" 2>&1 &
  casd_pid=$!
  sleep 0.5
}

# One test run: seconds, and the summary line.
run() {
  rm -rf "$work/cache" "$work/ws/kiln-out"
  local t0 t1
  t0=$(date +%s.%N)
  (cd "$work/ws" && KILN_CACHE=$work/cache "$kiln" test -j2 --json "$work/ev.json" "$@" 2>"$work/err") \
    || { cat "$work/err" >&2; exit 1; }
  t1=$(date +%s.%N)
  grep -m3 "warning" "$work/err" >&2 || true
  echo "$(echo "$t1 - $t0" | bc) $(grep ' actions: ' "$work/err")"
}

# Where the time went: summed durations of the compile and run steps.
split() {
  python3 - "$work/ev.json" <<'PY'
import json, sys
sums = {}
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e.get("event") != "action_executed":
        continue
    where = e.get("ran_on", {}).get("where", "local")
    key = (e["mnemonic"], where)
    sums[key] = sums.get(key, 0) + e.get("duration_ms", 0)
print("  ", ", ".join(f"{m} {w}: {ms / 1000:.1f} s" for (m, w), ms in sorted(sums.items())))
PY
}

run >/dev/null  # warms Go's compile cache, shared by every run below
for i in $(seq "$runs"); do
  echo "cold-local  $(run)"; split
  start_casd
  (cd "$work/ws" && KILN_CACHE=$work/warmup "$kiln" build --remote-executor "grpc://127.0.0.1:$port" \
     >/dev/null 2>&1 || true)  # casd holds kiln itself, as after any first contact
  echo "cold-remote $(run --remote-executor "grpc://127.0.0.1:$port")"; split
done
