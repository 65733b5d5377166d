#!/usr/bin/env bash
# kiln's core benchmark: 1,000 genrules over 10,000 source files, kiln against ninja
# (and Bazel, with BAZEL=1).
#
#   bash bench/core.sh
#
# Builds kiln (release), generates the workspace and its build.ninja into bench/out/ws
# (bench/gen_genrule_workspace.py), then measures with hyperfine, kiln and ninja side by
# side, both with -j2:
#   cold   kiln with an empty cache directory and no kiln-out/;
#          ninja with no ninja-out/, .ninja_log or .ninja_deps;
#   noop   the rebuild when nothing changed;
#   edit   the rebuild after appending a unique line to one source file (so kiln's cache
#          cannot already hold the result), which reruns 2 actions.
# Every run's own report is checked: each kiln run must end with the expected summary
# line (noop: 0 executed; edit: exactly the expected few executed) and each ninja run
# with the expected "[N/N]" line or "no work to do"; kiln-out/ and ninja-out/ must hold
# the same bytes. Results: bench/out/core-{cold,noop,edit}.{md,json}, the runs' logs in
# bench/out/logs/, the ratios kiln/ninja printed at the end and in bench/out/core.md.
#
# Environment: TARGETS, FILES, PACKAGES (workspace size; 1000, 10000, 100), JOBS (2),
# COLD_RUNS (5), NOOP_RUNS (30), EDIT_RUNS (15), KILN_FLAGS (extra global flags for
# kiln, e.g. "--sandbox=dir"; the default sandbox is auto, i.e. bubblewrap where it works),
# BAZEL=1 (Bazel as a third peer: Debian's bazel-bootstrap 4.2, `bazel build --jobs JOBS
# //...` over the same genrules in the workspace's BUILD.bazel files, its server kept
# running between runs as Bazel users have it, output base under WORK_DIR; cold is after
# `bazel clean`, which empties its action cache and outputs; its genrules run in its
# linux-sandbox where that works, as kiln's in bubblewrap),
# WORK_DIR (where the workspace and kiln's cache go; bench/out by default). For cold
# figures that compare across runs, give WORK_DIR a fresh file system, e.g.
#   mount -t tmpfs -o size=4g tmpfs /mnt/kb && WORK_DIR=/mnt/kb bash bench/core.sh
# (see bench/README.md, "Quiet machine": an ext4 without a journal slows inode
# allocation for minutes after many deletions, and kiln's sandboxes delete many).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/bench/out
WORK=${WORK_DIR:-$OUT}
WS=$WORK/ws
LOGS=$OUT/logs
KILN=$ROOT/target/release/kiln
JOBS=${JOBS:-2}
COLD_RUNS=${COLD_RUNS:-5}
NOOP_RUNS=${NOOP_RUNS:-30}
EDIT_RUNS=${EDIT_RUNS:-15}
KILN_FLAGS=${KILN_FLAGS:-}
export KILN_CACHE=$WORK/cache

die() {
    echo "core.sh: $*" >&2
    exit 1
}

BAZEL=${BAZEL:-}
PEERS=(ninja)
[ -n "$BAZEL" ] && PEERS+=(bazel)
for tool in cargo python3 hyperfine "${PEERS[@]}"; do
    command -v "$tool" >/dev/null || die "needs $tool on PATH"
done

echo "== building kiln (release)" >&2
(cd "$ROOT" && cargo build --release -p kiln --quiet)

echo "== generating the workspace into $WS" >&2
rm -rf "$WS" "$KILN_CACHE" "$LOGS"
mkdir -p "$LOGS"
python3 "$ROOT/bench/gen_genrule_workspace.py" "$WS" \
    --targets "${TARGETS:-1000}" --files "${FILES:-10000}" --packages "${PACKAGES:-100}" \
    >"$OUT/workspace.json"
read -r N EDIT_FILE EDIT_N < <(python3 -c '
import json, os, sys
s = json.load(open(sys.argv[1]))
print(s["targets"], s["edit_file"], s["edit_actions"])' "$WS/bench.json")
echo "   $N targets; the edit benchmark changes $EDIT_FILE ($EDIT_N actions rerun)" >&2

# Commands as hyperfine runs them (through its shell, whose start-up it subtracts).
# Each appends its report to a log that is checked afterwards.
kiln_cmd() { echo "$KILN -C $WS -j $JOBS $KILN_FLAGS build 2>>$LOGS/kiln-$1.log"; }
ninja_cmd() { echo "ninja -C $WS -j $JOBS >>$LOGS/ninja-$1.log 2>&1"; }
KILN_CLEAN="rm -rf $KILN_CACHE $WS/kiln-out"
NINJA_CLEAN="rm -rf $WS/ninja-out $WS/.ninja_log $WS/.ninja_deps"
BAZEL_RUN="cd $WS && bazel --output_user_root=$WORK/bazel-root"
bazel_cmd() { echo "$BAZEL_RUN build --nosandbox_debug --jobs $JOBS //... >>$LOGS/bazel-$1.log 2>&1"; }
BAZEL_CLEAN="$BAZEL_RUN clean >/dev/null 2>&1"
# The peers' commands for hyperfine: NAME [clean|edit] (what runs before each).
peers() {
    local name=$1 before=${2:-}
    local label=${name/noop/no-op} peer
    for peer in "${PEERS[@]}"; do
        printf '%s\0' --command-name "$peer $label"
        case "$before:$peer" in
            clean:ninja) printf '%s\0' --prepare "$NINJA_CLEAN" ;;
            clean:bazel) printf '%s\0' --prepare "$BAZEL_CLEAN" ;;
            edit:*) printf '%s\0' --prepare "$EDIT" ;;
        esac
        "${peer}_cmd" "$name" | tr -d '\n'
        printf '\0'
    done
}
EDIT="date +%s%N >>$WS/$EDIT_FILE"

bench() { # NAME RUNS WARMUP [hyperfine args...]
    local name=$1 runs=$2 warmup=$3
    shift 3
    echo "== $name: $runs runs each (+$warmup warm-up)" >&2
    hyperfine --runs "$runs" --warmup "$warmup" --style basic \
        --export-markdown "$OUT/core-$name.md" --export-json "$OUT/core-$name.json" "$@"
    echo $((runs + warmup)) >"$LOGS/$name.count"
}

# expect LOG COUNT PATTERN: the log holds exactly COUNT report lines, all matching PATTERN.
expect() {
    local log=$1 count=$2 pattern=$3 prefix=$4 got good
    got=$(grep -cE "$prefix" "$log" || true)
    good=$(grep -cE "$pattern" "$log" || true)
    if [[ $got != "$count" || $good != "$count" ]]; then
        grep -E "$prefix" "$log" | sort | uniq -c >&2 || true
        die "$log: expected $count runs matching /$pattern/, found $good of $got"
    fi
    echo "   ok: $count runs in $(basename "$log") match /$pattern/" >&2
}
expect_kiln() { # NAME CACHED EXECUTED
    local count
    count=$(cat "$LOGS/$1.count")
    expect "$LOGS/kiln-$1.log" "$count" \
        "^kiln: $N actions: $2 cached, $3 executed, 0 failed in " '^kiln: [0-9]+ actions:'
}
expect_bazel() { # NAME PROCESSES: Bazel's count of the processes it ran (no-op: 0)
    local count pattern
    count=$(cat "$LOGS/$1.count")
    pattern="^INFO: 1 process: 1 internal\.\$"
    [ "$2" != 0 ] && pattern="^INFO: $(($2 + 1)) processes: 1 internal, $2 [a-z-]+\.\$"
    [ -n "$BAZEL" ] && expect "$LOGS/bazel-$1.log" "$count" "$pattern" '^INFO: [0-9]+ process'
    return 0
}
same_bytes() { # WHEN
    diff -r "$WS/kiln-out" "$WS/ninja-out" >/dev/null ||
        die "kiln-out/ and ninja-out/ differ $1"
    if [ -n "$BAZEL" ]; then
        diff -r "$WS/kiln-out" "$WS/bazel-bin" >/dev/null ||
            die "kiln-out/ and bazel-bin/ differ $1"
    fi
    echo "   ok: kiln-out/ and the peers' outputs hold the same $N files $1" >&2
}
expect_ninja() { # NAME PATTERN
    local count
    count=$(cat "$LOGS/$1.count")
    expect "$LOGS/ninja-$1.log" "$count" "$2" '^(\[[0-9]+/[0-9]+\]|ninja: no work to do)'
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
mapfile -d '' -t COLD < <(peers cold clean)
bench cold "$COLD_RUNS" 1 \
    --command-name "kiln cold" --prepare "$KILN_CLEAN" "$(kiln_cmd cold)" "${COLD[@]}"
expect_kiln cold 0 "$N"
# ninja prints one [i/N] line per edge; count only the last one of each run.
expect "$LOGS/ninja-cold.log" "$(cat "$LOGS/cold.count")" "^\[$N/$N\]" "^\[$N/$N\]"
expect_bazel cold "$N"
same_bytes "after the cold builds"

mapfile -d '' -t NOOP < <(peers noop)
bench noop "$NOOP_RUNS" 3 --command-name "kiln no-op" "$(kiln_cmd noop)" "${NOOP[@]}"
expect_kiln noop "$N" 0
expect_ninja noop '^ninja: no work to do\.$'
expect_bazel noop 0

mapfile -d '' -t EDITS < <(peers edit edit)
bench edit "$EDIT_RUNS" 2 --command-name "kiln edit" --prepare "$EDIT" "$(kiln_cmd edit)" \
    "${EDITS[@]}"
expect_kiln edit $((N - EDIT_N)) "$EDIT_N"
# The log holds one [i/EDIT_N] line per rerun edge; check the last one of each run.
expect "$LOGS/ninja-edit.log" "$(cat "$LOGS/edit.count")" "^\[$EDIT_N/$EDIT_N\]" \
    "^(\[$EDIT_N/[0-9]+\]|ninja: no work to do)"
expect_bazel edit "$EDIT_N"
# The peers' runs edited the file after kiln's last run (and Bazel's after ninja's):
# bring every tool up to date, then compare.
$KILN -C "$WS" -j "$JOBS" $KILN_FLAGS build 2>>"$LOGS/kiln-final.log"
ninja -C "$WS" -j "$JOBS" >>"$LOGS/ninja-final.log" 2>&1
[ -z "$BAZEL" ] || (eval "$(bazel_cmd final)")
same_bytes "after the edit builds"

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$OUT" "$N" "$JOBS" "$LOAD_BEFORE" "$LOAD_AFTER" "${PEERS[@]}" <<'EOF' | tee "$OUT/core.md"
import json, os, sys
out, n, jobs, load_before, load_after = sys.argv[1:6]
peers = sys.argv[6:]
runs = {name: json.load(open(f"{out}/core-{name}.json"))["results"] for name in ["cold", "noop", "edit"]}
ms = lambda v: f"{v * 1000:.1f}"
fmt = lambda r: f"{ms(r['mean'])} ms ± {ms(r['stddev'] or 0)} ({ms(r['median'])})"
cpu = lambda r: r["user"] + r["system"]
def table(title, cols, cells):
    """One row per benchmark: kiln's cell, then each peer's cells (`cells(kiln, peer)`)."""
    print(f"| {title} | kiln |" + "".join(f" {c.format(p=p)} |" for p in peers for c in cols))
    print("|---|---|" + "---|" * len(cols) * len(peers))
    for name, (kiln, *others) in runs.items():
        print(f"| {name} |" + "".join(f" {c} |" for c in cells(kiln, None))
              + "".join(f" {c} |" for other in others for c in cells(kiln, other)))
    print()

table(f"{n} genrules, -j{jobs}: mean ± σ (median)", ["{p}", "kiln/{p}, means", "kiln/{p}, medians"],
      lambda kiln, other: [fmt(kiln)] if other is None else
      [fmt(other), f"{kiln['mean'] / other['mean']:.2f}", f"{kiln['median'] / other['median']:.2f}"])
table("CPU time (user + sys, mean)", ["{p}", "kiln/{p}"],
      lambda kiln, other: [f"{ms(cpu(kiln))} ms"] if other is None else
      [f"{ms(cpu(other))} ms", f"{cpu(kiln) / cpu(other):.2f}"])
if "bazel" in peers:
    print("(Bazel's CPU time is only its client's: its server, which runs the build, is not in it.)\n")
print(f"load average before: {load_before}; after: {load_after} ({os.cpu_count()} cores)")
EOF
