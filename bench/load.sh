#!/usr/bin/env bash
# How BUILD.toml loading scales: the same 20,000 genrules in one file and over 20 files,
# a 10 MB file, and a 20,000-deep dependency chain.
#
#   bash bench/load.sh
#
# Builds kiln (release), generates the workspaces into bench/out/load/
# (bench/gen_load_workspace.py) and times with hyperfine, 10 runs each after a warm-up:
#   one-file   `kiln graph //:t00000` over 20,000 targets in one BUILD.toml (1.3 MB):
#              every file is loaded, one target analyzed;
#   20-files   the same over 20 packages of 1,000 targets (`//p000:t00000`);
#   10mb       `kiln graph //:t00000` over 160,000 targets in one BUILD.toml (10.7 MB);
#   chain      `kiln graph //:t19999` over a 20,000-deep chain: every target loaded,
#              walked and analyzed.
# Loading is linear when one-file costs about what 20-files does, and 10mb about 8 times
# one-file. Results: bench/out/load.{md,json}.
#
# Environment: KILN (the binary to time; default target/release/kiln, built first),
# RUNS (10).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/bench/out
WS=$OUT/load
RUNS=${RUNS:-10}
export KILN_CACHE=$WS/cache

die() {
    echo "load.sh: $*" >&2
    exit 1
}

for tool in cargo python3 hyperfine; do
    command -v "$tool" >/dev/null || die "needs $tool on PATH"
done

if [[ -z ${KILN:-} ]]; then
    echo "== building kiln (release)" >&2
    (cd "$ROOT" && cargo build --release -p kiln --quiet)
    KILN=$ROOT/target/release/kiln
fi

echo "== generating the workspaces into $WS" >&2
rm -rf "$WS"
gen() { python3 "$ROOT/bench/gen_load_workspace.py" "$WS/$1" "${@:2}"; }
read -r ONE _ < <(gen one-file --targets 20000)
read -r MANY _ < <(gen 20-files --targets 20000 --files 20)
read -r BIG _ < <(gen 10mb --targets 160000)
read -r _ LAST < <(gen chain --targets 20000 --chain)
du -b "$WS"/*/BUILD.toml | sed "s|$WS/||" >&2

graph() { echo "$KILN -C $WS/$1 graph $2 >/dev/null"; }
hyperfine --runs "$RUNS" --warmup 1 --style basic \
    --export-markdown "$OUT/load.md" --export-json "$OUT/load.json" \
    --command-name "one-file (20,000 targets)" "$(graph one-file "$ONE")" \
    --command-name "20-files (20 x 1,000 targets)" "$(graph 20-files "$MANY")" \
    --command-name "10mb (160,000 targets)" "$(graph 10mb "$BIG")" \
    --command-name "chain (20,000 deep)" "$(graph chain "$LAST")"
echo "== load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
