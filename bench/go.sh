#!/usr/bin/env bash
# kiln's Go benchmark: `kiln test` / `kiln build` against `go test ./...` / `go build`.
#
#   bash bench/go.sh
#
# Builds kiln (release) and copies the binary to bench/out/go/kiln (so a rebuild by
# someone else cannot swap it in the middle of a run), then, on two workspaces:
#   hello  a copy of examples/hello-service in bench/out/go/hello (go_test race = true,
#          go_binary //:server for 4 platforms, stamped);
#   mod    a generated module of 200 packages in bench/out/go/mod (bench/gen_go_module.py;
#          go_test //:unit, go_binary //:app for linux/amd64);
# warms every cache once, then measures side by side with hyperfine:
#   noop-test   `kiln test` vs `go test ./...` (same -race setting as the BUILD.toml), all
#               results cached;
#   noop-build  `kiln build //:server|//:app` vs one `go build -o` per platform with the
#               flags and environment kiln's go_binary uses;
#               both no-ops also time kiln with the real toolchain first on PATH (kiln
#               runs `go env GOROOT` on every build; through the pyenv shim that costs
#               ~110 ms), as a third command;
#   edit-test   `kiln test` (also with the real toolchain first on PATH, as the go
#               side runs it) vs `go test ./...` after a fresh edit of one leaf package
#               before every run (hyperfine --prepare): mod via gen_go_module.py
#               --touch-kind body (a new number in Value() each time), hello by writing a
#               new number into an init() of store/; neither cache can hold the result.
# Every run's own report is checked (kiln's summary line: how many cached/executed; go's
# `ok` lines: how many `(cached)`), or the script stops.
#
# Go runs use the real toolchain ($(go env GOROOT)/bin/go, not the pyenv shim) with
# GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local and their own GOCACHE
# (bench/out/go/gocache-go); kiln runs use KILN_CACHE=bench/out/go/cache and
# KILN_GO_CACHE=bench/out/go/gocache. The caches are kept between runs of this script
# (a cold fill takes minutes on 2 cores); FRESH=1 deletes them first.
#
# The hello copy is not a git checkout of its own (GIT_CEILING_DIRECTORIES stops git at
# bench/out/go, or it would stamp the kiln repository's commit, which moves while the
# benchmark runs), so its kiln.toml's [stamp] defaults are used (STABLE_GIT_COMMIT is added
# when missing).
#
# Results: bench/out/go-<workspace>-<scenario>.{md,json} (hyperfine's exports),
# bench/out/go.md (the ratios kiln/go, also printed), bench/out/go/logs/ (every run's report).
# Environment: JOBS (2; kiln -j, go -p), NOOP_RUNS (15), EDIT_RUNS (5), HELLO_EDIT_RUNS (3),
# PACKAGES (200), KILN_FLAGS (extra global kiln flags, e.g. "--sandbox=dir"), FRESH.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/bench/out
W=$OUT/go
LOGS=$W/logs
HELLO=$W/hello
MOD=$W/mod
KILN=$W/kiln
JOBS=${JOBS:-2}
NOOP_RUNS=${NOOP_RUNS:-15}
EDIT_RUNS=${EDIT_RUNS:-5}
HELLO_EDIT_RUNS=${HELLO_EDIT_RUNS:-3}
PACKAGES=${PACKAGES:-200}
KILN_FLAGS=${KILN_FLAGS:-}
export KILN_CACHE=$W/cache
export KILN_GO_CACHE=$W/gocache
export GIT_CEILING_DIRECTORIES=$W

die() {
    echo "go.sh: $*" >&2
    exit 1
}

for tool in cargo python3 hyperfine go; do
    command -v "$tool" >/dev/null || die "needs $tool on PATH"
done
GO=$(go env GOROOT)/bin/go
[[ -x $GO ]] || die "no go binary at $GO"
# Environment of every go command (kiln's go actions pin the same values).
GOENV="GOCACHE=$W/gocache-go GOFLAGS=-mod=mod GOPROXY=off GOSUMDB=off GOTOOLCHAIN=local GOWORK=off GOTELEMETRY=off"

echo "== building kiln (release)" >&2
(cd "$ROOT" && cargo build --release -p kiln --quiet)
mkdir -p "$W"
install -m 755 "$ROOT/target/release/kiln" "$KILN"

if [[ ${FRESH:-} == 1 ]]; then
    echo "== FRESH=1: deleting the caches" >&2
    rm -rf "$KILN_CACHE" "$KILN_GO_CACHE" "$W/gocache-go"
fi

echo "== workspaces: $HELLO, $MOD" >&2
rm -rf "$HELLO" "$LOGS" "$W/go-out"
mkdir -p "$LOGS" "$W/go-out"
cp -r "$ROOT/examples/hello-service" "$HELLO"
rm -rf "$HELLO/kiln-out"
# [stamp] is kiln.toml's last table: the line lands in it.
grep -q '^\[stamp\]' "$HELLO/kiln.toml" || printf '\n[stamp]\n' >>"$HELLO/kiln.toml"
grep -q '^STABLE_GIT_COMMIT *=' "$HELLO/kiln.toml" ||
    printf 'STABLE_GIT_COMMIT = "0000000"\n' >>"$HELLO/kiln.toml"
stamp() { sed -nE "s/^$1 *= *\"(.*)\"/\1/p" "$HELLO/kiln.toml"; }
# The hello edit: a number the prepare step rewrites, read by an init() that is linked.
cat >>"$HELLO/store/store.go" <<'EOF'

// benchEdit is rewritten by bench/go.sh before each edit run.
var benchEdit = 0

func init() { benchEdit++ }
EOF
python3 "$ROOT/bench/gen_go_module.py" "$MOD" --packages "$PACKAGES" >"$W/module.json"
read -r MOD_TESTS < <(find "$MOD" -name '*_test.go' -printf '%h\n' | sort -u | wc -l)
HELLO_TESTS=$(find "$HELLO" -name '*_test.go' -printf '%h\n' | sort -u | wc -l)

# The go_binary //:server of hello, as go commands: ldflags and x_defs of its BUILD.toml
# with the stamp values kiln uses here.
HELLO_LDFLAGS="-s -w -X example.com/hello/internal/version.Commit=$(stamp STABLE_GIT_COMMIT)"
HELLO_LDFLAGS+=" -X example.com/hello/internal/version.Version=$(stamp STABLE_GIT_DESCRIBE)"
HELLO_PLATFORMS="linux/amd64 linux/arm64 darwin/arm64 windows/amd64"

# Commands as hyperfine runs them (through its shell, whose start-up it subtracts).
kiln_cmd() { # WS LOG ARGS...
    local ws=$1 log=$2
    shift 2
    echo "$KILN -C $ws -j $JOBS $KILN_FLAGS $* 2>>$LOGS/$log.log"
}
go_test_cmd() { # WS LOG [-race]
    local cgo=0
    [[ ${3:-} == -race ]] && cgo=1
    echo "cd $1 && $GOENV GORACE=atexit_sleep_ms=0 CGO_ENABLED=$cgo $GO test -p $JOBS ${3:-} ./... >>$LOGS/$2.log 2>&1"
}
go_build_cmd() { # WS MAIN NAME LDFLAGS PLATFORMS...
    local ws=$1 main=$2 name=$3 ldflags=$4 cmd="cd $1"
    shift 4
    for p in "$@"; do
        local os=${p%/*} arch=${p#*/}
        cmd+=" && $GOENV CGO_ENABLED=0 GOOS=$os GOARCH=$arch GOAMD64=v1 GOARM64=v8.0"
        cmd+=" $GO build -p $JOBS -trimpath -buildvcs=false '-ldflags=$ldflags'"
        cmd+=" -o $W/go-out/${name}_${os}_$arch $main"
    done
    echo "$cmd"
}

# The same kiln command with the real toolchain first on PATH: kiln asks `go env GOROOT`
# on every run, and through the pyenv shim that alone takes ~110 ms.
# It logs to <log>-realgo.log.
real_go() { echo "PATH=$(dirname "$GO"):\$PATH ${1/.log/-realgo.log}"; }

HELLO_KILN_TEST=$(kiln_cmd "$HELLO" hello-kiln-test test)
HELLO_GO_TEST=$(go_test_cmd "$HELLO" hello-go-test -race)
HELLO_KILN_BUILD=$(kiln_cmd "$HELLO" hello-kiln-build build //:server)
# shellcheck disable=SC2086
HELLO_GO_BUILD=$(go_build_cmd "$HELLO" ./cmd/server server "$HELLO_LDFLAGS" $HELLO_PLATFORMS)
MOD_KILN_TEST=$(kiln_cmd "$MOD" mod-kiln-test test)
MOD_GO_TEST=$(go_test_cmd "$MOD" mod-go-test)
MOD_KILN_BUILD=$(kiln_cmd "$MOD" mod-kiln-build build //:app)
MOD_GO_BUILD=$(go_build_cmd "$MOD" ./cmd/app app "" linux/amd64)
MOD_EDIT="python3 $ROOT/bench/gen_go_module.py $MOD --touch-leaf --touch-kind body >>$LOGS/mod-touch.log"
HELLO_EDIT="sed -i \"s/^var benchEdit = .*/var benchEdit = \$(date +%s%N)/\" $HELLO/store/store.go"

echo "== warming every cache (a cold fill takes minutes)" >&2
for cmd in "$HELLO_KILN_TEST" "$HELLO_GO_TEST" "$HELLO_KILN_BUILD" "$HELLO_GO_BUILD" \
    "$MOD_KILN_TEST" "$MOD_GO_TEST" "$MOD_KILN_BUILD" "$MOD_GO_BUILD"; do
    start=$(date +%s%N)
    sh -c "$cmd" || die "warm-up failed: $cmd (see $LOGS)"
    echo "   $((($(date +%s%N) - start) / 1000000)) ms  ${cmd:0:120}" >&2
done
for p in $HELLO_PLATFORMS; do
    os=${p%/*} arch=${p#*/} exe=
    [[ $os == windows ]] && exe=.exe
    cmp -s "$HELLO/kiln-out/server/${os}_$arch/server$exe" "$W/go-out/server_${os}_$arch" &&
        echo "   same bytes: kiln's and go's server for $p" >&2 ||
        echo "   NOTE: kiln's and go's server for $p differ" >&2
done
cmp -s "$MOD/kiln-out/app/linux_amd64/app" "$W/go-out/app_linux_amd64" &&
    echo "   same bytes: kiln's and go's app" >&2 ||
    echo "   NOTE: kiln's and go's app differ" >&2
rm -f "$LOGS"/*.log

bench() { # NAME RUNS WARMUP [hyperfine args...]
    local name=$1 runs=$2 warmup=$3
    shift 3
    echo "== $name: $runs runs each (+$warmup warm-up)" >&2
    hyperfine --runs "$runs" --warmup "$warmup" --style basic \
        --export-markdown "$OUT/go-$name.md" --export-json "$OUT/go-$name.json" "$@"
    echo $((runs + warmup)) >"$LOGS/$name.count"
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
    echo "   ok: $count lines of $(basename "$log") match /$pattern/" >&2
}
expect_kiln() { # NAME LOG ACTIONS CACHED EXECUTED
    expect "$LOGS/$2.log" "$(cat "$LOGS/$1.count")" \
        "^kiln: $3 actions: $4 cached, $5 executed, 0 failed in " '^kiln: [0-9]+ actions:'
}
expect_go() { # NAME LOG PACKAGES CACHED: PACKAGES `ok` lines per run, CACHED of them cached
    local runs
    runs=$(cat "$LOGS/$1.count")
    expect "$LOGS/$2.log" $((runs * $3)) '^ok ' '^(ok|FAIL|---) '
    expect "$LOGS/$2.log" $((runs * $4)) '^ok .*\(cached\)$' '^ok .*\(cached\)$'
}
actions_of() { tail -1 "$LOGS/$1.log" | sed -E 's/^kiln: ([0-9]+) actions:.*/\1/'; }

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

bench hello-noop-test "$NOOP_RUNS" 2 \
    --command-name "kiln test (hello)" "$HELLO_KILN_TEST" \
    --command-name "go test -race ./... (hello)" "$HELLO_GO_TEST" \
    --command-name "kiln test, real go on PATH (hello)" "$(real_go "$HELLO_KILN_TEST")"
HT=$(actions_of hello-kiln-test)
expect_kiln hello-noop-test hello-kiln-test "$HT" "$HT" 0
expect_kiln hello-noop-test hello-kiln-test-realgo "$HT" "$HT" 0
expect_go hello-noop-test hello-go-test "$HELLO_TESTS" "$HELLO_TESTS"

bench hello-noop-build "$NOOP_RUNS" 2 \
    --command-name "kiln build //:server (hello)" "$HELLO_KILN_BUILD" \
    --command-name "go build x4 platforms (hello)" "$HELLO_GO_BUILD" \
    --command-name "kiln build //:server, real go on PATH (hello)" "$(real_go "$HELLO_KILN_BUILD")"
HB=$(actions_of hello-kiln-build)
expect_kiln hello-noop-build hello-kiln-build "$HB" "$HB" 0
expect_kiln hello-noop-build hello-kiln-build-realgo "$HB" "$HB" 0

bench mod-noop-test "$NOOP_RUNS" 2 \
    --command-name "kiln test (mod)" "$MOD_KILN_TEST" \
    --command-name "go test ./... (mod)" "$MOD_GO_TEST" \
    --command-name "kiln test, real go on PATH (mod)" "$(real_go "$MOD_KILN_TEST")"
MT=$(actions_of mod-kiln-test)
expect_kiln mod-noop-test mod-kiln-test "$MT" "$MT" 0
expect_kiln mod-noop-test mod-kiln-test-realgo "$MT" "$MT" 0
expect_go mod-noop-test mod-go-test "$MOD_TESTS" "$MOD_TESTS"

bench mod-noop-build "$NOOP_RUNS" 2 \
    --command-name "kiln build //:app (mod)" "$MOD_KILN_BUILD" \
    --command-name "go build (mod)" "$MOD_GO_BUILD" \
    --command-name "kiln build //:app, real go on PATH (mod)" "$(real_go "$MOD_KILN_BUILD")"
MB=$(actions_of mod-kiln-build)
expect_kiln mod-noop-build mod-kiln-build "$MB" "$MB" 0
expect_kiln mod-noop-build mod-kiln-build-realgo "$MB" "$MB" 0

# A leaf edit reruns, for the leaf and each dependent, its GoTestBuild (cmd/app's too)
# and, where it has tests, its GoTest (the test binary changed), plus the GoListInputs
# builtin (the go list action itself stays cached: no import changed).
read -r AFFECTED < <(python3 "$ROOT/bench/gen_go_module.py" "$MOD" --touch-leaf --touch-kind body |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["affected_packages"])')
MOD_RERUN=$((AFFECTED - 1)) # cmd/app has no tests
# Each touch writes the previous edit number + 1; regenerating the module restarts the
# count, and both caches keep results across runs of this script, so start the count at
# a number never used before.
sed -i -E "s/^(\tlastEdit = )[0-9]+$/\1$(date +%s%N)/" "$MOD/pkg/l0/p000/a.go"
grep -qE "^.lastEdit = [0-9]{19}$" "$MOD/pkg/l0/p000/a.go" || die "could not seed the leaf's edit number"
rm -f "$LOGS"/*.log
bench mod-edit-test "$EDIT_RUNS" 1 \
    --command-name "kiln test, one leaf edited (mod)" --prepare "$MOD_EDIT" "$MOD_KILN_TEST" \
    --command-name "go test ./..., one leaf edited (mod)" --prepare "$MOD_EDIT" "$MOD_GO_TEST" \
    --command-name "kiln test, real go on PATH, one leaf edited (mod)" --prepare "$MOD_EDIT" "$(real_go "$MOD_KILN_TEST")"
MOD_EXEC=$((AFFECTED + MOD_RERUN + 1))
expect_kiln mod-edit-test mod-kiln-test "$MT" $((MT - MOD_EXEC)) $MOD_EXEC
expect_kiln mod-edit-test mod-kiln-test-realgo "$MT" $((MT - MOD_EXEC)) $MOD_EXEC
expect_go mod-edit-test mod-go-test "$MOD_TESTS" $((MOD_TESTS - MOD_RERUN))

# store/ is imported by handlers/ and cmd/server/: 3 of hello's 4 test packages rerun,
# each as a GoTestBuild and a GoTest, plus GoListInputs.
bench hello-edit-test "$HELLO_EDIT_RUNS" 1 \
    --command-name "kiln test, store/ edited (hello)" --prepare "$HELLO_EDIT" "$HELLO_KILN_TEST" \
    --command-name "go test -race ./..., store/ edited (hello)" --prepare "$HELLO_EDIT" "$HELLO_GO_TEST" \
    --command-name "kiln test, real go on PATH, store/ edited (hello)" --prepare "$HELLO_EDIT" "$(real_go "$HELLO_KILN_TEST")"
expect_kiln hello-edit-test hello-kiln-test "$HT" $((HT - 7)) 7
expect_kiln hello-edit-test hello-kiln-test-realgo "$HT" $((HT - 7)) 7
expect_go hello-edit-test hello-go-test "$HELLO_TESTS" $((HELLO_TESTS - 3))

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$OUT" "$JOBS" "$LOAD_BEFORE" "$LOAD_AFTER" "$MOD_RERUN" <<'EOF' | tee "$OUT/go.md"
import json, os, sys
out, jobs, load_before, load_after, rerun = sys.argv[1:6]
print(f"| scenario (-j{jobs} / -p{jobs}) | kiln mean ± σ (median) | go mean ± σ (median) "
      "| kiln/go, means | kiln/go, medians |")
print("|---|---|---|---|---|")
names = [("hello-noop-test", "hello: no-op `kiln test` / `go test -race ./...`"),
         ("hello-noop-build", "hello: no-op `kiln build //:server` / 4× `go build`"),
         ("mod-noop-test", "200 pkgs: no-op `kiln test` / `go test ./...`"),
         ("mod-noop-build", "200 pkgs: no-op `kiln build //:app` / `go build`"),
         ("mod-edit-test", f"200 pkgs: leaf edited, {rerun} test packages rerun"),
         ("hello-edit-test", "hello: store/ edited, 3 of 4 test packages rerun")]
ms = lambda v: f"{v * 1000:.0f}"
fmt = lambda r: f"{ms(r['mean'])} ms ± {ms(r['stddev'] or 0)} ({ms(r['median'])})"
for name, title in names:
    kiln, go, *real = json.load(open(f"{out}/go-{name}.json"))["results"]
    for k, label in [(kiln, title)] + [(r, f"{title}, real `go` first on PATH") for r in real]:
        ratio = lambda key: f"{k[key] / go[key]:.2f}"
        print(f"| {label} | {fmt(k)} | {fmt(go)} | {ratio('mean')} | {ratio('median')} |")
print(f"\nload average before: {load_before}; after: {load_after} ({os.cpu_count()} cores)")
EOF
