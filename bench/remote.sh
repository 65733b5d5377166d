#!/usr/bin/env bash
# Remote cache benchmark: what a warm remote buys, against what the bytes alone cost.
#
#     cargo build --release -p kiln
#     bench/remote.sh [--targets 200] [--packages 10] [--runs 5] [--jobs N]
#
# In one run, on a generated workspace of genrules each writing one output of 100 KiB to
# 1 MiB (distinct bytes per target), plus one small index action per package that reads
# all of that package's outputs (so the DAG has two levels):
#
#   cold          kiln build, empty local cache, no remote (every action runs)
#   remote        kiln build, empty local cache, `kiln serve` on loopback holding every
#                 result (every action is a remote hit)
#   local         kiln build, warm local cache, kiln-out/ deleted (restoring outputs
#                 with no network: what kiln costs besides the transfer)
#   curl-par      curl --parallel of every blob the remote build downloads, 16 at a time:
#                 the time to simply download the outputs (the issue's yardstick)
#   curl-seq      the remote build's own requests (GET ac/<key>, then that result's
#                 blobs, action by action) one at a time on one connection
#   curl-seq-par  the same requests, 16 at a time
#
# then prints the ratios, and splits the remote build's wall and CPU time into local
# work, bytes and kiln's own work, with the requests counted from the `kiln serve` log
# lines of one extra remote build.
#
# Decisions: the outputs are written by `yes <name> | head -c SIZE` (cheap to run, so
# the cold build measures kiln rather than the tools); curl-par fetches exactly the cas/
# entries of the server (every output once; the empty stdout is never stored) and no ac/
# entry; the curl-seq cases add the ac/ entries, so remote vs curl-seq is kiln's own
# overhead over the same requests, and curl-seq vs curl-seq-par what concurrency buys.
# The machine's load average is printed, as shared machines make the figures move.
# KILN_BIN overrides the binary; KILN_SERVE_BIN the one that runs `kiln serve` (to tell
# the client's changes from the server's); KEEP=1 keeps the scratch directory.

set -euo pipefail

TARGETS=200
PACKAGES=10
RUNS=5
JOBS=$(nproc)
while [ $# -gt 0 ]; do
    case "$1" in
        --targets) TARGETS=$2; shift 2 ;;
        --packages) PACKAGES=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --jobs) JOBS=$2; shift 2 ;;
        *) echo "usage: $0 [--targets N] [--packages N] [--runs N] [--jobs N]" >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
KILN=${KILN_BIN:-$ROOT/target/release/kiln}
SERVE=${KILN_SERVE_BIN:-$KILN}
for bin in "$KILN" "$SERVE"; do
    if [ ! -x "$bin" ]; then
        echo "remote.sh: $bin is missing; run cargo build --release -p kiln" >&2
        exit 1
    fi
done
for tool in hyperfine curl python3; do
    command -v "$tool" >/dev/null || { echo "remote.sh: $tool is required" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/kiln-bench-remote.XXXXXX)
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
    if [ -n "${KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

load() { cut -d" " -f1-3 /proc/loadavg; }

# --- the workspace ---------------------------------------------------------------------

# Size of target t's output in bytes: 100 KiB to 1 MiB, spread by a fixed stride.
size_of() { echo $(( (100 + ($1 * 389) % 925) * 1024 )); }

generate() {
    local ws=$1 per=$((TARGETS / PACKAGES)) t=0 p pkg deps
    mkdir -p "$ws"
    printf '[workspace]\nname = "bench-remote"\n' > "$ws/kiln.toml"
    for p in $(seq 0 $((PACKAGES - 1))); do
        pkg=$(printf 'p%02d' "$p")
        mkdir -p "$ws/$pkg"
        deps=""
        {
            for _ in $(seq 1 "$per"); do
                printf '[genrule.t%04d]\nouts = ["t%04d.bin"]\n' "$t" "$t"
                printf 'cmd = "yes %s/t%04d | head -c %d > $OUT"\n' "$pkg" "$t" "$(size_of $t)"
                printf 'tools = ["yes", "head"]\n\n'
                deps="$deps\":t$(printf %04d $t)\", "
                t=$((t + 1))
            done
            printf '[genrule.index]\nsrcs = [%s]\nouts = ["index.txt"]\n' "${deps%, }"
            printf 'cmd = "wc -c $SRCS > $OUT"\ntools = ["wc"]\n'
        } > "$ws/$pkg/BUILD.toml"
    done
}

A=$WORK/a/ws           # populates the remote
B=$WORK/b/elsewhere/ws # builds from it, at another path
generate "$A"
generate "$B"
ACTIONS=$((TARGETS + PACKAGES))

# --- the server, warmed by A -----------------------------------------------------------

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
SERVE_LOG=$WORK/serve.log
"$SERVE" serve --listen "127.0.0.1:$PORT" --dir "$WORK/server" >>"$SERVE_LOG" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
    curl -s -o /dev/null "$URL/" && break
    sleep 0.05
done

echo "== $ACTIONS actions, populating the remote at $URL"
(cd "$A" && KILN_CACHE=$WORK/cache-a "$KILN" build -j "$JOBS" --remote-cache "$URL")
echo "remote holds $(ls "$WORK/server/ac" | wc -l) results," \
    "$(ls "$WORK/server/cas" | wc -l) blobs, $(du -sb "$WORK/server/cas" | cut -f1) bytes"

# curl's configs: every blob; and every result followed by its blobs.
python3 - "$WORK" "$URL" <<'PY'
import json, os, sys

work, url = sys.argv[1], sys.argv[2]
server = os.path.join(work, "server")


def entry(kind, name):
    return 'url = "%s/%s/%s"\noutput = "%s/dl/%s-%s"\n' % (url, kind, name, work, kind, name)


with open(os.path.join(work, "blobs.cfg"), "w") as out:
    for digest in sorted(os.listdir(os.path.join(server, "cas"))):
        out.write(entry("cas", digest))
with open(os.path.join(work, "requests.cfg"), "w") as out:
    for key in sorted(os.listdir(os.path.join(server, "ac"))):
        out.write(entry("ac", key))
        with open(os.path.join(server, "ac", key)) as f:
            result = json.load(f)
        for output in result["outputs"]:
            out.write(entry("cas", str(output["digest"]).split(":")[-1]))
PY

# A warm local cache for the `local` case.
(cd "$B" && KILN_CACHE=$WORK/cache-local "$KILN" build -j "$JOBS" >/dev/null 2>&1)

# --- the measurements ------------------------------------------------------------------

fresh_dl="rm -rf $WORK/dl && mkdir $WORK/dl"
echo "== hyperfine, $RUNS runs each (load average before: $(load))"
hyperfine --runs "$RUNS" --warmup 1 --export-json "$WORK/hyperfine.json" \
    -n cold --prepare "rm -rf $WORK/cache-cold $B/kiln-out" \
    "cd $B && KILN_CACHE=$WORK/cache-cold $KILN build -j $JOBS" \
    -n remote --prepare "rm -rf $WORK/cache-b $B/kiln-out" \
    "cd $B && KILN_CACHE=$WORK/cache-b $KILN build -j $JOBS --remote-cache $URL" \
    -n local --prepare "rm -rf $B/kiln-out" \
    "cd $B && KILN_CACHE=$WORK/cache-local $KILN build -j $JOBS" \
    -n curl-par --prepare "$fresh_dl" \
    "curl -sS --fail --parallel --parallel-max 16 -K $WORK/blobs.cfg" \
    -n curl-seq --prepare "$fresh_dl" \
    "curl -sS --fail -K $WORK/requests.cfg" \
    -n curl-seq-par --prepare "$fresh_dl" \
    "curl -sS --fail --parallel --parallel-max 16 -K $WORK/requests.cfg"
echo "load average after: $(load)"

# One more remote build, its requests counted from the server log.
rm -rf "$WORK/cache-b" "$B/kiln-out"
BEFORE=$(wc -l < "$SERVE_LOG")
(cd "$B" && KILN_CACHE=$WORK/cache-b "$KILN" build -j "$JOBS" --remote-cache "$URL" 2>"$WORK/remote-run.txt")
tail -n 1 "$WORK/remote-run.txt"
tail -n +"$((BEFORE + 1))" "$SERVE_LOG" > "$WORK/remote-requests.log"

# Check: B's outputs are A's, byte for byte.
if ! diff -r "$A/kiln-out" "$B/kiln-out" >/dev/null; then
    echo "remote.sh: B's outputs differ from A's" >&2
    exit 1
fi

python3 - "$WORK/hyperfine.json" "$WORK/remote-requests.log" <<'PY'
import json, re, sys
from collections import Counter

with open(sys.argv[1]) as f:
    results = {r["command"]: r for r in json.load(f)["results"]}
t = {name: r["mean"] for name, r in results.items()}
sd = {name: r["stddev"] or 0.0 for name, r in results.items()}

print()
print("%-13s %9s %8s" % ("case", "mean s", "± s"))
for name in ["cold", "remote", "local", "curl-par", "curl-seq", "curl-seq-par"]:
    print("%-13s %9.3f %8.3f" % (name, t[name], sd[name]))

print()
print("cold / remote            %6.2fx  (what a warm remote saves)" % (t["cold"] / t["remote"]))
print("remote / curl-par        %6.2fx  (aim: <= 1.2)" % (t["remote"] / t["curl-par"]))
print("remote / curl-seq        %6.2fx  (kiln over the same requests sent by curl)"
      % (t["remote"] / t["curl-seq"]))
print("curl-seq / curl-seq-par  %6.2fx  (what 16 requests in flight buy)"
      % (t["curl-seq"] / t["curl-seq-par"]))

line = re.compile(r"kiln serve: (\S+) (\w+) /(\w+)/\S+ (\d+) (\d+)B (\d+)ms")
kinds, peers, nbytes = Counter(), set(), 0
with open(sys.argv[2]) as f:
    for text in f:
        m = line.search(text)
        if not m:
            continue
        peer, method, kind, status, size, _ = m.groups()
        kinds["%s /%s %s" % (method, kind, status)] += 1
        peers.add(peer)
        nbytes += int(size)
requests = sum(kinds.values())
print()
print("one remote build: %d requests on %d connection(s), %.1f MiB"
      % (requests, len(peers), nbytes / 2**20))
for k, n in sorted(kinds.items()):
    print("  %-20s %5d" % (k, n))

# Split: kiln's local work is the `local` case; the bytes cost what curl-par takes; the
# rest is kiln's own (verifying, writing into its store, the GET /ac requests curl-par
# does not send), wall and CPU (user + system of the client process, from hyperfine; the
# server's CPU is in neither). With requests in flight the parts overlap, so the rest can
# come out negative: kiln then hides its own work behind the transfer.
actions = max(kinds.get("GET /ac 200", 0), 1)
cpu = {name: r["user"] + r["system"] for name, r in results.items()}
trips = max(t["curl-seq"] - t["curl-par"], 0.0)
rest = t["remote"] - t["local"] - t["curl-par"]
print()
print("split of the remote build (%.3f s, client CPU %.3f s):" % (t["remote"], cpu["remote"]))
print("  local work (as local)              %7.3f s   CPU %6.3f s" % (t["local"], cpu["local"]))
print("  bytes (as curl-par, %5.0f MiB/s)   %7.3f s   CPU %6.3f s"
      % (nbytes / t["curl-par"] / 2**20, t["curl-par"], cpu["curl-par"]))
print("  kiln's own work                    %7.3f s   CPU %6.3f s = %.2f ms per action"
      % (rest, cpu["remote"] - cpu["local"] - cpu["curl-par"],
         1000 * (cpu["remote"] - cpu["local"] - cpu["curl-par"]) / actions))
print("round trips, one at a time (curl-seq - curl-par): %.3f s = %.2f ms per request"
      % (trips, 1000 * trips / max(requests, 1)))
PY
