#!/usr/bin/env bash
# The release pipeline of examples/hello-service (race tests, two platforms, strip, upx,
# image), kiln against the same pipeline as a `make -j2` Makefile (bench/Makefile.pipeline).
#
#   bash bench/pipeline.sh
#
# The service is copied to bench/out/pipeline/ws and committed to a fresh git repository
# (stamping reads git, as in a real checkout). hyperfine then measures, both tools with
# -j2, in one run:
#   cold  kiln: empty KILN_CACHE, empty Go compile cache (KILN_GO_CACHE), no kiln-out/;
#         make: empty GOCACHE, no out/;
#   warm  nothing changed since the last run of the same tool.
# kiln runs `kiln build //:unit //:image` (the go_test target runs the race tests per
# package); make runs `make -f Makefile.pipeline -j2 all`. The Makefile's image step uses
# umoci (one single-platform layout per platform, no index); kiln's writes an index over
# both platforms and a docker archive per platform: kiln does slightly more work.
# Results: bench/out/pipeline-{cold,warm}.{md,json}; the ratios kiln/make are printed
# and written to bench/out/pipeline.md.
#
# Environment: COLD_RUNS (2), WARM_RUNS (10).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/bench/out/pipeline
WS=$OUT/ws
KILN=$ROOT/target/release/kiln
COLD_RUNS=${COLD_RUNS:-2}
WARM_RUNS=${WARM_RUNS:-10}

GOROOT_DIR=$(go env GOROOT)
export PATH="$GOROOT_DIR/bin:$PATH"
export KILN_CACHE=$OUT/kiln-cache KILN_GO_CACHE=$OUT/kiln-go-cache GOCACHE=$OUT/gocache

(cd "$ROOT" && cargo build --release -p kiln --locked >/dev/null)
rm -rf "$WS" && mkdir -p "$OUT" && cp -r "$ROOT/examples/hello-service" "$WS"
rm -rf "$WS/kiln-out" && cp "$ROOT/bench/Makefile.pipeline" "$WS/Makefile.pipeline"
printf '\n[go]\nroot = "%s"\n' "$GOROOT_DIR" >>"$WS/kiln.toml"
printf 'out/\nMakefile.pipeline\n' >>"$WS/.gitignore"
(cd "$WS" && git init -q && git add -A &&
    git -c user.email=bench@kiln -c user.name=bench commit -qm bench && git tag v0.1.0)

KILN_CMD="$KILN -C $WS -j2 build //:unit //:image"
MAKE_CMD="make -C $WS -f Makefile.pipeline -j2 all"
KILN_COLD="rm -rf $KILN_CACHE $KILN_GO_CACHE $WS/kiln-out"
MAKE_COLD="rm -rf $GOCACHE $WS/out"

hyperfine --runs "$COLD_RUNS" --export-json "$OUT/../pipeline-cold.json" \
    --export-markdown "$OUT/../pipeline-cold.md" \
    -n kiln-cold --prepare "$KILN_COLD" "$KILN_CMD" \
    -n make-cold --prepare "$MAKE_COLD" "$MAKE_CMD"
# The last cold run of each left a warm state behind.
hyperfine --runs "$WARM_RUNS" --warmup 1 --export-json "$OUT/../pipeline-warm.json" \
    --export-markdown "$OUT/../pipeline-warm.md" \
    -n kiln-warm "$KILN_CMD" -n make-warm "$MAKE_CMD"

# Checks: both built the images; kiln's warm run executed nothing.
test -s "$WS/kiln-out/image/index.digest" && test -s "$WS/out/image/linux_arm64/index.json"
$KILN_CMD 2>&1 | tail -1 | grep -q ', 0 executed, 0 failed' || {
    echo "pipeline.sh: the warm kiln run executed actions" >&2
    exit 1
}

python3 - "$OUT/.." <<'PY'
import json, sys
out = sys.argv[1]
lines = []
for phase in ("cold", "warm"):
    res = {r["command"]: r["mean"] for r in json.load(open(f"{out}/pipeline-{phase}.json"))["results"]}
    k, m = res[f"kiln-{phase}"], res[f"make-{phase}"]
    lines.append(f"{phase}: kiln {k:.2f}s, make -j2 {m:.2f}s, kiln/make = {k/m:.3f} (make/kiln = {m/k:.1f}x)")
text = "\n".join(lines)
print(text)
open(f"{out}/pipeline.md", "w").write("# pipeline: kiln vs make -j2\n\n" + text + "\n")
PY
