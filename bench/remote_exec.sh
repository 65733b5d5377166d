#!/usr/bin/env bash
# Remote execution benchmark: kiln on a Remote Execution API engine (buildbox-casd on
# loopback) against the same builds without it.
#
#     cargo build --release -p kiln
#     bench/remote_exec.sh [--targets 1000] [--files 10000] [--packages 100]
#                          [--runs 3] [--warm-runs 10] [--jobs 2] [--casd-jobs 2]
#
# On the genrule workspace of bench/gen_genrule_workspace.py (`cat` of 10 sources per
# target, every 10th target also of the 9 before it), in one run:
#
#   cold-local   kiln build -j JOBS, empty local cache, no remote (bubblewrap)
#   cold-remote  kiln build -j JOBS --remote-executor grpc://casd, empty local cache, a
#                fresh casd (empty action cache) that has seen the launcher and `cat`
#                (one other action built through it), so every action runs on casd
#   warm-grpc    a second machine: the same workspace at another path, empty local
#                cache, --remote-cache grpc://casd holding every result (a casd that
#                a first machine populated)
#   warm-http    the same with --remote-cache http://kiln-serve holding every result
#
#   floor        bench/reapi_floor.py: the same number of `cat` actions from a client
#                that costs nothing, on a fresh casd (FLOOR_PYTHON: a python with grpcio
#                and BuildGrid's REAPI protos, default BuildGrid's environment)
#
# and prints the ratios (aims: cold-remote / cold-local <= 2, warm-grpc / warm-http
# <= 1.2; floor / cold-local is the lowest cold ratio any client reaches), then the split of the remote actions' time from one more cold remote build's
# --json (`ran_on.phases_ms`: kiln's upload, the engine's queue, the worker's input
# fetch, execution and output upload, kiln's fetch).
#
# Every run's summary line is checked, and every build's kiln-out/ against cold-local's.
# Decisions: casd runs as the test fixture runs it (testkit's `Casd`: --jobs, the
# runner binding /usr, /bin, /lib, /lib64 read-only); a cold remote build starts a new
# casd with a new cache directory in hyperfine's --prepare, warmed by a one-action
# workspace, so the first contact's upload of the launcher (what every later build on
# that engine reuses) is timed once, separately, and not in every run. The load
# average is printed, as shared machines make the figures move.
# WORK_DIR: where the workspaces, caches and casd's storage go (/tmp by default); for
# cold figures that compare across runs give it a fresh file system (bench/core.sh says
# why), e.g. mount -t tmpfs -o size=6g tmpfs /mnt/kb && WORK_DIR=/mnt/kb bench/remote_exec.sh
# KILN_BIN overrides the binary; CASD_ARGS adds casd arguments (e.g.
# "--runner-arg=--staging-mode=copy-or-link"); KEEP=1 keeps the scratch directory.

set -euo pipefail

TARGETS=1000
FILES=10000
PACKAGES=100
RUNS=3
WARM_RUNS=10
JOBS=2
CASD_JOBS=2
while [ $# -gt 0 ]; do
    case "$1" in
        --targets) TARGETS=$2; shift 2 ;;
        --files) FILES=$2; shift 2 ;;
        --packages) PACKAGES=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --warm-runs) WARM_RUNS=$2; shift 2 ;;
        --jobs) JOBS=$2; shift 2 ;;
        --casd-jobs) CASD_JOBS=$2; shift 2 ;;
        *) echo "usage: $0 [--targets N] [--files N] [--packages N] [--runs N] [--warm-runs N] [--jobs N] [--casd-jobs N]" >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
KILN=${KILN_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/kiln}
FLOOR_PYTHON=${FLOOR_PYTHON:-/opt/kiln-buildgrid/bin/python3}
[ -x "$KILN" ] || { echo "remote_exec.sh: $KILN is missing; run cargo build --release -p kiln" >&2; exit 1; }
for tool in hyperfine curl python3 buildbox-casd buildbox-run; do
    command -v "$tool" >/dev/null || { echo "remote_exec.sh: $tool is required" >&2; exit 1; }
done

WORK=$(mktemp -d "${WORK_DIR:-/tmp}/kiln-bench-rexec.XXXXXX")
LOGS=$WORK/logs
mkdir -p "$LOGS"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ -f "$WORK/casd-exec.pid" ]; then kill "$(cat "$WORK/casd-exec.pid")" 2>/dev/null || true; fi
    if [ -n "${KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

load() { cut -d" " -f1-3 /proc/loadavg; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "remote_exec.sh: nothing listens on port $1" >&2
    exit 1
}

# casd as testkit's `Casd` starts it (Debian's /bin and /lib are links into /usr).
casd_args() { # PORT
    local args=("--bind=127.0.0.1:$1" "--buildbox-run=$(command -v buildbox-run)"
        "--jobs=$CASD_JOBS" "--cache-failures=false" "--runner-arg=--ro-bind-mount=/usr:/usr")
    for dir in bin lib lib64; do
        [ -e "/$dir" ] && args+=("--runner-arg=--ro-bind-mount=$(readlink -f "/$dir"):/$dir")
    done
    # shellcheck disable=SC2206
    args+=(${CASD_ARGS:-})
    echo "${args[@]}"
}

# --- the workspaces ----------------------------------------------------------------------

A=$WORK/a/ws           # the first machine (and the local and remote cold builds)
B=$WORK/b/elsewhere/ws # the second machine: same workspace, another path
W=$WORK/warmup/ws      # one genrule, to show casd the launcher and `cat` before the cold runs
for ws in "$A" "$B"; do
    python3 "$ROOT/bench/gen_genrule_workspace.py" "$ws" --targets "$TARGETS" \
        --files "$FILES" --packages "$PACKAGES" >/dev/null
done
python3 "$ROOT/bench/gen_genrule_workspace.py" "$W" --targets 1 --files 1 --packages 1 >/dev/null
N=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["targets"])' "$A/bench.json")

# --- the engines -------------------------------------------------------------------------

# The executor: restarted empty before each cold remote run (see the header).
EXEC_PORT=$(free_port)
EXEC_URL=grpc://127.0.0.1:$EXEC_PORT
cat > "$WORK/fresh-casd.sh" <<EOF
#!/usr/bin/env bash
# A new casd on port $EXEC_PORT with an empty cache, shown the launcher and cat by one action.
set -e
if [ -f $WORK/casd-exec.pid ]; then
    kill \$(cat $WORK/casd-exec.pid) 2>/dev/null || true
    while kill -0 \$(cat $WORK/casd-exec.pid) 2>/dev/null; do sleep 0.05; done
fi
rm -rf $WORK/casd-exec $WORK/cache-warmup $W/kiln-out
mkdir -p $WORK/casd-exec
setsid buildbox-casd $(casd_args "$EXEC_PORT") $WORK/casd-exec/cache \
    </dev/null >>$WORK/casd-exec.log 2>&1 &
echo \$! > $WORK/casd-exec.pid
for _ in \$(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/$EXEC_PORT) 2>/dev/null && break; sleep 0.05; done
cd $W && KILN_CACHE=$WORK/cache-warmup $KILN build -j $JOBS --remote-executor $EXEC_URL \
    2>>$LOGS/warmup.log
EOF
chmod +x "$WORK/fresh-casd.sh"

# The gRPC cache, populated by A.
CACHE_PORT=$(free_port)
# shellcheck disable=SC2046
buildbox-casd $(casd_args "$CACHE_PORT") "$WORK/casd-cache/cache" </dev/null \
    >>"$WORK/casd-cache.log" 2>&1 &
PIDS+=($!)
# The HTTP cache, populated by A.
HTTP_PORT=$(free_port)
"$KILN" serve --listen "127.0.0.1:$HTTP_PORT" --dir "$WORK/serve" >>"$WORK/serve.log" 2>&1 &
PIDS+=($!)
wait_port "$CACHE_PORT"
wait_port "$HTTP_PORT"

LAUNCHER=$(dirname "$KILN")/kiln-launch
[ -x "$LAUNCHER" ] || echo "remote_exec.sh: warning: no $LAUNCHER: kiln itself launches every remote action" >&2
echo "== $N genrules; first contact with a new casd (uploads the launcher, $(du -h "$LAUNCHER" 2>/dev/null | cut -f1); kiln is $(du -h "$KILN" | cut -f1)):"
start=$(date +%s.%N)
"$WORK/fresh-casd.sh"
echo "   $(python3 -c "import sys; print('%.2f s' % (float(sys.argv[2]) - float(sys.argv[1])))" "$start" "$(date +%s.%N)") for one action"

echo "== populating the gRPC cache (casd) and the HTTP cache (kiln serve) from $A"
(cd "$A" && KILN_CACHE=$WORK/cache-pop-grpc "$KILN" build -j "$JOBS" \
    --remote-cache "grpc://127.0.0.1:$CACHE_PORT" 2>>"$LOGS/populate.log")
rm -rf "$A/kiln-out"
(cd "$A" && KILN_CACHE=$WORK/cache-pop-http "$KILN" build -j "$JOBS" \
    --remote-cache "http://127.0.0.1:$HTTP_PORT" 2>>"$LOGS/populate.log")
rm -rf "$A/kiln-out"

# --- the measurements --------------------------------------------------------------------

kiln_in() { # WS CASE CACHE [FLAGS...]
    local ws=$1 name=$2 cache=$3
    shift 3
    echo "cd $ws && KILN_CACHE=$cache $KILN build -j $JOBS $* 2>>$LOGS/$name.log"
}
echo "== hyperfine: cold $RUNS runs, warm $WARM_RUNS runs (load average before: $(load))"
hyperfine --runs "$RUNS" --export-json "$WORK/cold.json" --style basic \
    -n cold-local --prepare "rm -rf $WORK/cache-cold $A/kiln-out" \
    "$(kiln_in "$A" cold-local "$WORK/cache-cold")" \
    -n cold-remote --prepare "rm -rf $WORK/cache-cold $A/kiln-out && $WORK/fresh-casd.sh" \
    "$(kiln_in "$A" cold-remote "$WORK/cache-cold" --remote-executor "$EXEC_URL")"
cp -r "$A/kiln-out" "$WORK/out-remote"
echo "load average after the cold runs: $(load)"
# The engine's floor: the same number of cat actions from a client that costs nothing
# (bench/reapi_floor.py), on a fresh casd like cold-remote's.
echo "0" > "$WORK/floor"
if "$FLOOR_PYTHON" -c "import grpc, buildgrid" 2>/dev/null; then
    "$WORK/fresh-casd.sh"
    for _ in $(seq 1 "$RUNS"); do
        "$FLOOR_PYTHON" "$ROOT/bench/reapi_floor.py" "$EXEC_PORT" --actions "$N" | tee -a "$LOGS/floor.log"
    done
    sed -n 's/^floor_seconds=//p' "$LOGS/floor.log" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}' > "$WORK/floor"
else
    echo "   (no engine floor: $FLOOR_PYTHON has no grpc or REAPI protos; see bench/reapi_floor.py)"
fi
hyperfine --runs "$WARM_RUNS" --warmup 1 --export-json "$WORK/warm.json" --style basic \
    -n warm-grpc --prepare "rm -rf $WORK/cache-b $B/kiln-out" \
    "$(kiln_in "$B" warm-grpc "$WORK/cache-b" --remote-cache "grpc://127.0.0.1:$CACHE_PORT")" \
    -n warm-http --prepare "rm -rf $WORK/cache-b $B/kiln-out" \
    "$(kiln_in "$B" warm-http "$WORK/cache-b" --remote-cache "http://127.0.0.1:$HTTP_PORT")"
echo "load average after: $(load)"

# --- the checks --------------------------------------------------------------------------

expect() { # CASE PATTERN
    local log=$LOGS/$1.log got good
    got=$(grep -cE '^kiln: [0-9]+ actions:' "$log" || true)
    good=$(grep -cE "$2" "$log" || true)
    if [ "$got" = 0 ] || [ "$got" != "$good" ]; then
        grep -E '^kiln: [0-9]+ actions:' "$log" | sort | uniq -c >&2 || true
        echo "remote_exec.sh: $1: $good of $got runs match /$2/" >&2
        exit 1
    fi
    echo "   ok: $got runs of $1 match /$2/"
}
expect cold-local "^kiln: $N actions: 0 cached, $N executed, 0 failed"
expect cold-remote "^kiln: $N actions: 0 cached \(0 remote\), $N executed \($N remote\), 0 failed"
expect warm-grpc "^kiln: $N actions: $N cached \($N remote\), 0 executed"
expect warm-http "^kiln: $N actions: $N cached \($N remote\), 0 executed"
rm -rf "$A/kiln-out"
(cd "$A" && KILN_CACHE=$WORK/cache-cold "$KILN" build -j "$JOBS" 2>/dev/null)
diff -r "$A/kiln-out" "$WORK/out-remote" >/dev/null ||
    { echo "remote_exec.sh: the remote build's outputs differ from the local one's" >&2; exit 1; }
diff -r "$A/kiln-out" "$B/kiln-out" >/dev/null ||
    { echo "remote_exec.sh: the second machine's outputs differ from the first's" >&2; exit 1; }
echo "   ok: local, remote and second-machine outputs are the same bytes"

# One more cold remote build, for the split of its actions' time.
rm -rf "$WORK/cache-cold" "$A/kiln-out"
"$WORK/fresh-casd.sh"
(cd "$A" && KILN_CACHE=$WORK/cache-cold "$KILN" build -j "$JOBS" --remote-executor "$EXEC_URL" \
    --json "$WORK/cold-remote.jsonl" 2>>"$LOGS/split.log")

python3 - "$WORK/cold.json" "$WORK/warm.json" "$WORK/cold-remote.jsonl" "$JOBS" "$CASD_JOBS" \
    "$(cat "$WORK/floor")" <<'PY'
import json, statistics, sys

results = {}
for path in sys.argv[1:3]:
    with open(path) as f:
        for r in json.load(f)["results"]:
            results[r["command"]] = r
jobs, casd_jobs = int(sys.argv[4]), int(sys.argv[5])
print()
print("%-12s %9s %8s %9s %9s" % ("case", "mean s", "± s", "median s", "CPU s"))
for name in ["cold-local", "cold-remote", "warm-grpc", "warm-http"]:
    r = results[name]
    print("%-12s %9.3f %8.3f %9.3f %9.3f" % (name, r["mean"], r["stddev"] or 0.0, r["median"],
                                            r["user"] + r["system"]))
t = {n: r["median"] for n, r in results.items()}
print()
print("cold-remote / cold-local  %6.2fx  (aim: <= 2)" % (t["cold-remote"] / t["cold-local"]))
floor = float(sys.argv[6])
if floor:
    print("engine floor / cold-local %6.2fx  (%.2f s: no client of this engine gets below it here)"
          % (floor / t["cold-local"], floor))
print("warm-grpc / warm-http     %6.2fx  (aim: <= 1.2)" % (t["warm-grpc"] / t["warm-http"]))

runs = []
with open(sys.argv[3]) as f:
    for line in f:
        e = json.loads(line)
        on = e.get("ran_on") or {}
        if e.get("event") == "action_executed" and on.get("where") == "remote":
            runs.append(on)
if not runs:
    sys.exit("no remote actions in the split build's events")
print()
print("one cold remote build, %d actions on casd (--jobs=%d), kiln -j %d:" % (len(runs), casd_jobs, jobs))
print("  %-28s %8s %8s %9s" % ("step (per action)", "median", "mean", "sum s"))
steps = [("kiln: input root + upload", "upload"), ("engine: queue", None),
         ("worker: whole", "worker"), ("  worker: input fetch/stage", "input_fetch"),
         ("  worker: execution", "execution"), ("  worker: output upload", "output_upload"),
         ("kiln: fetch outputs", "fetch")]
for label, key in steps:
    ms = [r["queue_ms"] if key is None else r["phases_ms"][key] for r in runs]
    print("  %-28s %6.0f ms %6.1f ms %8.2f" % (label, statistics.median(ms), statistics.mean(ms),
                                              sum(ms) / 1000))
worker = sum(r["phases_ms"]["worker"] for r in runs) / 1000
print("  the worker's time over casd's %d slots: %.2f s (a floor for the build's wall time)"
      % (casd_jobs, worker / casd_jobs))
PY
