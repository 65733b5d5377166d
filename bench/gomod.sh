#!/usr/bin/env bash
# kiln's Go module benchmark: the edit figures of the "real Go modules" issue, kiln and go
# side by side, in interleaved rounds.
#
#   bash bench/gomod.sh
#
# One generated module (bench/gen_go_module.py, PACKAGES=100 by default) in
# bench/out/gomod/mod, edited in one leaf package (pkg/l0/p000) before every timed run
# (hyperfine --prepare), in four scenarios:
#   edit-test     `kiln test` vs `go test ./...` after a code edit (--touch-kind body:
#                 Value() stores a new number, so every importer links new code);
#   comment-test  the same after a comment-only edit (--touch-kind comment: the comment on
#                 the first line of Value()'s body gets a new number, every line stays where
#                 it is, so Go's compiled output is unchanged);
#   doc-test      the same after a package doc comment edit (--touch-kind doc: the comment
#                 above the package clause, which is in the part of a file `go list` reads);
#   edit-build4   `kiln build //:app4` (go_binary for linux/amd64, linux/arm64,
#                 darwin/arm64, windows/amd64, ldflags -s -w) vs the four `go build -o`
#                 commands one after another (one shell script per run), with the flags and
#                 environment of kiln's go_binary, after a code edit.
#
# Fairness: go runs the real toolchain ($(go env GOROOT)/bin/go, not the pyenv shim) with
# its own GOCACHE (bench/out/gomod/gocache-go), kiln its own KILN_CACHE and KILN_GO_CACHE
# (bench/out/gomod/cache, gocache), all kept warm between runs and across runs of the
# script (FRESH=1 deletes them first); kiln runs with the same toolchain first on PATH
# (it reads GOROOT off it instead of asking the shim); both at -j/-p JOBS. The go
# commands get the environment of kiln's Go actions (rules/src/go/mod.rs `go_env`):
# CGO_ENABLED=0, GOFLAGS=-mod=readonly, GOTOOLCHAIN=local, GOPROXY=off, GOAMD64=v1 /
# GOARM64=v8.0; go build also -trimpath -buildvcs=false and the target's -ldflags.
#
# Rounds: the machine is shared, so a burst of load must not land on one side only. Each
# of ROUNDS rounds runs every scenario (in an order rotating from round to round) as one
# hyperfine call of RUNS runs per command, kiln first in odd rounds and go first in even
# ones; the figures are the medians over all rounds' runs. Before each scenario's
# hyperfine call, one edit and one unmeasured run of each command bring both to the
# scenario's state (the other scenarios' edits touch the same file), and for edit-build4
# check that kiln's and go's four binaries are the same bytes.
#
# Every timed run's report is checked, or the script stops: kiln's summary line (how many
# actions cached and executed), go test's `ok` lines (how many `(cached)`), the go build
# script's last line. The load average is read at the start and end of each hyperfine
# call and every 2 s in between; the report gives each scenario's range.
#
# Results: bench/out/gomod.md (the table, also printed), bench/out/gomod/json/ (hyperfine's
# exports per scenario and round), bench/out/gomod/logs/ (every run's report).
# Environment: PACKAGES (100), ROUNDS (6), RUNS (3), JOBS (2), SCENARIOS (all four, in
# the order above), KILN_FLAGS (extra global kiln flags), KILN_BIN (time this kiln binary
# instead of building target/release/kiln), CACHES (the directory of the three caches,
# bench/out/gomod; e.g. a tmpfs, to see what the disk costs each side), FRESH.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/bench/out
W=$OUT/gomod
LOGS=$W/logs
JSON=$W/json
MOD=$W/mod
KILN=$W/kiln
GEN=$ROOT/bench/gen_go_module.py
JOBS=${JOBS:-2}
PACKAGES=${PACKAGES:-100}
ROUNDS=${ROUNDS:-6}
RUNS=${RUNS:-3}
SCENARIOS=${SCENARIOS:-edit-test comment-test doc-test edit-build4}
KILN_FLAGS=${KILN_FLAGS:-}
PLATFORMS="linux/amd64 linux/arm64 darwin/arm64 windows/amd64"
CACHES=${CACHES:-$W}
export KILN_CACHE=$CACHES/cache
export KILN_GO_CACHE=$CACHES/gocache
export GIT_CEILING_DIRECTORIES=$W

die() {
    echo "gomod.sh: $*" >&2
    exit 1
}

for tool in python3 hyperfine go cmp; do
    command -v "$tool" >/dev/null || die "needs $tool on PATH"
done
GO=$(go env GOROOT)/bin/go
[[ -x $GO ]] || die "no go binary at $GO"
GOBIN=$(dirname "$GO")
# The environment of kiln's Go actions for the host (rules/src/go/mod.rs `go_env`), with
# go's own GOCACHE.
GOENV="GOCACHE=$CACHES/gocache-go GOFLAGS=-mod=readonly GOPROXY=off GOSUMDB=off GOTOOLCHAIN=local"
GOENV+=" GOWORK=off GO111MODULE=on GOTELEMETRY=off CGO_ENABLED=0"

mkdir -p "$W"
if [[ -n ${KILN_BIN:-} ]]; then
    install -m 755 "$KILN_BIN" "$KILN"
else
    echo "== building kiln (release)" >&2
    (cd "$ROOT" && cargo build --release -p kiln --quiet)
    install -m 755 "${CARGO_TARGET_DIR:-$ROOT/target}/release/kiln" "$KILN"
fi
if [[ ${FRESH:-} == 1 ]]; then
    echo "== FRESH=1: deleting the caches" >&2
    rm -rf "$KILN_CACHE" "$KILN_GO_CACHE" "$CACHES/gocache-go"
fi

echo "== module: $PACKAGES packages in $MOD" >&2
rm -rf "$LOGS" "$JSON" "$W/go-out"
mkdir -p "$LOGS" "$JSON" "$W/go-out"
python3 "$GEN" "$MOD" --packages "$PACKAGES" >"$W/module.json"
# Both caches outlive the module: start each kind of edit at a number never used before.
SEED=$(date +%s%N)
for kind in body comment doc; do
    python3 "$GEN" "$MOD" --touch-leaf --touch-kind "$kind" --touch-number "$SEED" >"$W/touch-$kind.json"
done
read -r AFFECTED REACHES_MAIN < <(python3 -c 'import json, sys
t = json.load(open(sys.argv[1])); print(t["affected_packages"], t["reaches_main"])' "$W/touch-body.json")
[[ $REACHES_MAIN == True ]] || die "the edited leaf does not reach cmd/app: edit-build4 would build nothing new"
TESTS=$(find "$MOD" -name '*_test.go' -printf '%h\n' | sort -u | wc -l)
RERUN=$((AFFECTED - 1)) # cmd/app, which imports the leaf, has no tests

# Commands as hyperfine runs them (through its shell, whose start-up it subtracts), each
# appending its report to LOG.
kiln_cmd() { # LOG ARGS...
    local log=$1
    shift
    echo "PATH=$GOBIN:\$PATH $KILN -C $MOD -j $JOBS $KILN_FLAGS $* >>$log 2>&1"
}
go_test_cmd() { # LOG
    echo "cd $MOD && $GOENV GOAMD64=v1 $GO test -p $JOBS ./... >>$1 2>&1"
}
# The four go builds of //:app4, one after another, as one script.
{
    echo "set -e"
    echo "cd $MOD"
    for p in $PLATFORMS; do
        os=${p%/*} arch=${p#*/} exe=
        [[ $os == windows ]] && exe=.exe
        case $arch in
            amd64) level=GOAMD64=v1 ;;
            arm64) level=GOARM64=v8.0 ;;
        esac
        echo "$GOENV GOOS=$os GOARCH=$arch $level $GO build -p $JOBS -trimpath -buildvcs=false" \
            "'-ldflags=-s -w' -o $W/go-out/app4_${os}_$arch$exe ./cmd/app"
    done
    echo "echo 'go build: 4 platforms built'"
} >"$W/go-build4.sh"
go_build_cmd() { echo "sh $W/go-build4.sh >>$1 2>&1"; }

edit_kind() { # SCENARIO
    case $1 in
        edit-*) echo body ;;
        comment-test) echo comment ;;
        doc-test) echo doc ;;
        *) die "unknown scenario $1" ;;
    esac
}
edit_cmd() { echo "python3 $GEN $MOD --touch-leaf --touch-kind $(edit_kind "$1") >>$LOGS/touch.log"; }
kiln_side() { # SCENARIO LOG
    case $1 in
        *-test) kiln_cmd "$2" test ;;
        *-build4) kiln_cmd "$2" build //:app4 ;;
    esac
}
go_side() { # SCENARIO LOG
    case $1 in
        *-test) go_test_cmd "$2" ;;
        *-build4) go_build_cmd "$2" ;;
    esac
}

# expect LOG COUNT PATTERN PREFIX: the log holds exactly COUNT lines matching PREFIX, all
# matching PATTERN.
expect() {
    local log=$1 count=$2 pattern=$3 prefix=$4 got good
    got=$(grep -cE "$prefix" "$log" || true)
    good=$(grep -cE "$pattern" "$log" || true)
    if [[ $got != "$count" || $good != "$count" ]]; then
        grep -E "$prefix" "$log" | sed -E 's/in [0-9.]+s$//; s/[0-9.]+s$//' | sort | uniq -c >&2 || true
        die "$log: expected $count lines matching /$pattern/, found $good of $got"
    fi
}
kiln_summary() { # ACTIONS CACHED EXECUTED
    echo "^kiln: $1 actions: $2 cached, $3 executed, 0 failed in "
}
actions_of() { grep -E '^kiln: [0-9]+ actions:' "$1" | tail -1 | sed -E 's/^kiln: ([0-9]+) actions:.*/\1/'; }

# check SCENARIO KILN_LOG GO_LOG: every timed run did what the scenario says.
check() {
    local scenario=$1 klog=$2 glog=$3 executed
    # What a leaf edit reruns in kiln, besides GoListInputs (the builtin that cuts the
    # module's Go files to what `go list` reads), which every edit reruns:
    case $scenario in
        # a GoTestBuild per affected package (cmd/app included) and a GoTest per
        # affected package with tests: every test binary changed;
        edit-test) executed=$((AFFECTED + RERUN + 1)) ;;
        # the GoTestBuilds (go replays the unchanged links from its test cache), no GoTest:
        # the binaries are the same bytes;
        comment-test) executed=$((AFFECTED + 1)) ;;
        # the same: go list's copy of the files has their comments emptied, so it
        # does not run again;
        doc-test) executed=$((AFFECTED + 1)) ;;
        # one GoBuild per platform (the GoLists stay cached).
        edit-build4) executed=5 ;;
    esac
    local total=$TEST_ACTIONS
    [[ $scenario == *-build4 ]] && total=$BUILD_ACTIONS
    expect "$klog" "$RUNS" "$(kiln_summary "$total" $((total - executed)) "$executed")" '^kiln: [0-9]+ actions:'
    case $scenario in
        *-test)
            local cached=$TESTS
            [[ $scenario == edit-test ]] && cached=$((TESTS - RERUN))
            expect "$glog" $((RUNS * TESTS)) '^ok ' '^(ok|FAIL|---) '
            expect "$glog" $((RUNS * cached)) '^ok .*\(cached\)$' '^ok .*\(cached\)$'
            ;;
        *-build4) expect "$glog" "$RUNS" '^go build: 4 platforms built$' '^go build' ;;
    esac
    echo "   ok: $RUNS runs each: kiln $executed of $total actions executed; go as expected" >&2
}

# same_binaries: kiln's //:app4 and go's four builds, byte for byte.
same_binaries() {
    for p in $PLATFORMS; do
        local os=${p%/*} arch=${p#*/} exe=
        [[ $os == windows ]] && exe=.exe
        cmp -s "$MOD/kiln-out/app4/${os}_$arch/app4$exe" "$W/go-out/app4_${os}_$arch$exe" ||
            die "kiln's and go's app4 for $p differ after building the same sources"
    done
}

echo "== warming every cache (a cold fill takes minutes)" >&2
for cmd in "$(kiln_cmd "$LOGS/warm.log" test)" "$(go_test_cmd "$LOGS/warm.log")" \
    "$(kiln_cmd "$LOGS/warm.log" build //:app4)" "$(go_build_cmd "$LOGS/warm.log")"; do
    start=$(date +%s%N)
    sh -c "$cmd" || die "warm-up failed: $cmd (see $LOGS/warm.log)"
    echo "   $((($(date +%s%N) - start) / 1000000)) ms  ${cmd:0:120}" >&2
done
same_binaries
sh -c "$(kiln_cmd "$LOGS/actions.log" test)"
TEST_ACTIONS=$(actions_of "$LOGS/actions.log")
sh -c "$(kiln_cmd "$LOGS/actions.log" build //:app4)"
BUILD_ACTIONS=$(actions_of "$LOGS/actions.log")
echo "   $TESTS test packages; the edited leaf reaches $AFFECTED packages ($RERUN with tests);" \
    "kiln test: $TEST_ACTIONS actions, kiln build //:app4: $BUILD_ACTIONS" >&2

# The load average, every 2 s, while the rounds run.
while sleep 2; do echo "$(date +%s.%N) $(cut -d' ' -f1 /proc/loadavg)"; done >"$W/load.txt" &
SAMPLER=$!
trap 'kill $SAMPLER 2>/dev/null || true' EXIT
: >"$W/windows.txt"

read -ra LIST <<<"$SCENARIOS"
for ((round = 1; round <= ROUNDS; round++)); do
    k=$(((round - 1) % ${#LIST[@]}))
    for scenario in "${LIST[@]:k}" "${LIST[@]:0:k}"; do
        tag=$scenario-r$round
        echo "== round $round/$ROUNDS: $scenario ($(cut -d' ' -f1-3 /proc/loadavg))" >&2
        # Bring both sides to this scenario's state: one edit, one run each.
        sh -c "$(edit_cmd "$scenario")"
        sh -c "$(kiln_side "$scenario" "$LOGS/$tag-sync.log")" || die "kiln failed, see $LOGS/$tag-sync.log"
        sh -c "$(go_side "$scenario" "$LOGS/$tag-sync.log")" || die "go failed, see $LOGS/$tag-sync.log"
        [[ $scenario == *-build4 ]] && same_binaries
        kiln=(--command-name kiln --prepare "$(edit_cmd "$scenario")" "$(kiln_side "$scenario" "$LOGS/$tag-kiln.log")")
        gocmd=(--command-name go --prepare "$(edit_cmd "$scenario")" "$(go_side "$scenario" "$LOGS/$tag-go.log")")
        if ((round % 2)); then order=("${kiln[@]}" "${gocmd[@]}"); else order=("${gocmd[@]}" "${kiln[@]}"); fi
        start="$(date +%s.%N) $(cut -d' ' -f1 /proc/loadavg)"
        hyperfine --runs "$RUNS" --style basic --export-json "$JSON/$tag.json" "${order[@]}" >&2
        echo "$scenario $start $(date +%s.%N) $(cut -d' ' -f1 /proc/loadavg)" >>"$W/windows.txt"
        check "$scenario" "$LOGS/$tag-kiln.log" "$LOGS/$tag-go.log"
    done
done
kill $SAMPLER 2>/dev/null || true

python3 - "$W" "$OUT/gomod.md" "$JOBS" "$PACKAGES" "$ROUNDS" "$RUNS" "$AFFECTED" "$SCENARIOS" <<'EOF'
import glob, json, os, statistics, sys
w, out, jobs, packages, rounds, runs, affected, scenarios = sys.argv[1:9]
titles = {
    "edit-test": "code edit: `kiln test` / `go test ./...`",
    "comment-test": "comment edit in a function body: `kiln test` / `go test ./...`",
    "doc-test": "package doc comment edit: `kiln test` / `go test ./...`",
    "edit-build4": "code edit: `kiln build //:app4` / 4× `go build`",
}
loads = [tuple(map(float, l.split())) for l in open(f"{w}/load.txt") if len(l.split()) == 2]
# scenario, start time, load at start, end time, load at end
windows = [l.split() for l in open(f"{w}/windows.txt")]
loads += [(float(t), float(l)) for win in windows for t, l in (win[1:3], win[3:5])]
lines = [f"{packages} packages, one leaf edited (reaching {affected} packages), -j{jobs} / -p{jobs}, "
         f"{rounds} rounds × {runs} runs per command, medians over all runs",
         "",
         "| scenario | kiln median | go median | kiln/go | per-round kiln/go | load (1 min) |",
         "|---|---|---|---|---|---|"]
for scenario in scenarios.split():
    times = {"kiln": [], "go": []}
    ratios = []
    for path in sorted(glob.glob(f"{w}/json/{scenario}-r*.json")):
        got = {r["command"]: r["times"] for r in json.load(open(path))["results"]}
        for side in times:
            times[side] += got[side]
        ratios.append(statistics.median(got["kiln"]) / statistics.median(got["go"]))
    if not ratios:
        continue
    kiln, go = statistics.median(times["kiln"]), statistics.median(times["go"])
    seen = [l for t, l in loads for s, a, _, b, _ in windows if s == scenario and float(a) <= t <= float(b)]
    load = f"{min(seen):.1f}–{max(seen):.1f} (median {statistics.median(seen):.1f})" if seen else "?"
    lines.append(f"| {titles[scenario]} | {kiln:.2f} s | {go:.2f} s | **{kiln / go:.2f}** "
                 f"| {min(ratios):.2f}–{max(ratios):.2f} | {load} |")
lines.append(f"\n{os.cpu_count()} cores; load average (1 min) read every 2 s while each scenario's runs "
             "were timed, the benchmark's own work included.")
text = "\n".join(lines)
print(text)
open(out, "w").write(text + "\n")
EOF
