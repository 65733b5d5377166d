#!/usr/bin/env python3
"""Generate a kiln workspace holding a layered Go module, for benchmarks.

    python3 bench/gen_go_module.py OUTDIR [--packages 200] [--layers L] [--seed 1]
    python3 bench/gen_go_module.py OUTDIR --touch-leaf [PKGDIR]
        [--touch-kind append|body|comment|doc] [--touch-number N]

The first form writes OUTDIR/kiln.toml, BUILD.toml, go.mod (module
example.com/benchmod, standard library only, `go 1.23`, no toolchain line),
N packages under pkg/l<layer>/p<index>/ and cmd/app, and prints a JSON summary
(including the line cmd/app prints). The second form edits one leaf package
of an existing generated workspace (PKGDIR, e.g. pkg/l0/p000; by default the
first leaf) so a benchmark can time the run after a one-package edit, and
prints one JSON object naming the touched file, how many packages import
the leaf (i.e. how many test actions a source-keyed build system reruns) and
whether cmd/app is one of them.

Touch kinds:
- append (the default): append a new, unused function to b.go. The package's
  sources and export data change, so every importer recompiles, but the
  linker drops the unused function, so each test binary comes out
  byte-identical and `go test` reports every package `(cached)` (it keys
  test results on the test binary). It measures recompile and relink cost.
- body: make Value() store the edit number in a package variable. Results do
  not change, so all tests still pass, but the code importers link does, so
  `go test` reruns the leaf and every package importing it: the usual edit.
- comment: rewrite the number in the comment on the first line of Value()'s
  body. Every line stays where it is and nothing after the comment moves, so
  Go's compiled output is unchanged: go recompiles and vets the leaf, and
  replays every link and test result from its cache.
- doc: rewrite the number in the second line of the package doc comment
  (above the package clause, so in the part of the file `go list` reads).
  Otherwise as comment.
Each kind writes its previous number + 1, or --touch-number N; a benchmark
whose caches outlive the module seeds each kind once with a number never used
before (the time, say), so no cache has seen the edited file.

Shape of the module (decisions the brief left open):
- Packages are spread evenly over layers (default round(N ** 0.4), 8 for 200).
  Layer 0 holds the leaves; a package of layer k > 0 imports one package of
  layer k - 1 and up to two more of any lower layer, 1 to 3 in all.
- Imports are local: a package picks its imports near its own relative
  position within the lower layer. An edit to one leaf therefore reaches a
  cone of packages, not the whole module, as in real code bases; with random
  imports nearly every package would depend on every leaf.
- cmd/app imports every package of the top layer. Packages that nobody
  imports are the roots. BUILD.toml builds it as //:app (linux/amd64) and as
  //:app4 (linux/amd64, linux/arm64, darwin/arm64, windows/amd64, with
  ldflags -s -w).
- Each package has a.go (Value, Mix, Label), b.go (Counter, Join, Sum) and
  p_test.go whose expected values are computed here, so the tests check real
  results. The tests take microseconds.
- Output is a pure function of (packages, layers, seed): the same arguments
  give the same bytes. Regenerating into a directory that already holds a
  benchmod workspace replaces it; any other non-empty directory is refused.
"""

import argparse
import json
import random
import re
import shutil
import sys
from pathlib import Path

MODULE = "example.com/benchmod"
MARKER = 'name = "benchmod"'
FNV_PRIME = 16777619


class Package:
    """One generated Go package and the packages it imports."""

    def __init__(self, index, layer):
        self.index = index
        self.layer = layer
        self.deps = []

    @property
    def name(self):
        return f"p{self.index:03d}"

    @property
    def dir(self):
        return f"pkg/l{self.layer}/{self.name}"

    @property
    def import_path(self):
        return f"{MODULE}/{self.dir}"

    @property
    def base(self):
        return (self.index * 7919 + 13) % 1000

    @property
    def step(self):
        return self.index % 7 + 1


def split_layers(count, layers):
    """Spread `count` packages over `layers` layers, lower layers first."""
    sizes = [count // layers + (1 if i < count % layers else 0) for i in range(layers)]
    out, index = [], 0
    for layer, size in enumerate(sizes):
        out.append([Package(index + j, layer) for j in range(size)])
        index += size
    return out


def near(rng, lower, rel):
    """Pick a package of `lower` near relative position `rel` in [0, 1)."""
    window = max(2, len(lower) // 6)
    center = int(rel * len(lower))
    lo, hi = max(0, center - window), min(len(lower) - 1, center + window)
    return lower[rng.randint(lo, hi)]


def wire(layers, rng):
    """Give every package of a layer above 0 one to three lower imports."""
    for k in range(1, len(layers)):
        for pos, pkg in enumerate(layers[k]):
            rel = pos / len(layers[k])
            deps = {near(rng, layers[k - 1], rel)}
            for _ in range(rng.randint(0, 2)):
                deps.add(near(rng, layers[rng.randrange(k)], rel))
            pkg.deps = sorted(deps, key=lambda p: p.index)


def values(packages):
    """Value() of every package, as the generated Go code computes it."""
    out = {}
    for pkg in packages:  # ordered by layer, so deps come first
        out[pkg.index] = pkg.base + sum(out[d.index] for d in pkg.deps)
    return out


def mix(base, x):
    return ((x ^ base) * FNV_PRIME) % (1 << 32) % 1000003


def import_block(paths):
    lines = "\n".join(f'\t"{p}"' for p in paths)
    return f"import (\n{lines}\n)\n"


def source_a(pkg):
    paths = [d.import_path for d in pkg.deps] + ["strconv"]
    value = " + ".join(["Base"] + [f"{d.name}.Value()" for d in pkg.deps])
    return f"""// Package {pkg.name} is generated benchmark code (layer {pkg.layer}).
// Revision 0: gen_go_module.py --touch-kind doc rewrites this number.
package {pkg.name}

{import_block(paths)}
// Base is this package's own contribution to Value.
const Base = {pkg.base}

// Value adds Base to the values of the packages this one imports.
func Value() int {{
\t// Note 0: gen_go_module.py --touch-kind comment rewrites this number.
\treturn {value}
}}

// Mix scrambles x with Base, FNV style.
func Mix(x int) int {{
\th := uint32(x) ^ uint32(Base)
\th *= {FNV_PRIME}
\treturn int(h % 1000003)
}}

// Label names this package and its value.
func Label() string {{
\treturn "{pkg.name}=" + strconv.Itoa(Value())
}}
"""


def source_b(pkg):
    return f"""package {pkg.name}

import "strings"

// Step is how far Counter.Add moves.
const Step = {pkg.step}

// Counter counts in steps of Step.
type Counter struct{{ n int }}

// Add moves the counter one step and returns its new value.
func (c *Counter) Add() int {{
\tc.n += Step
\treturn c.n
}}

// Join joins words with this package's separator.
func Join(words []string) string {{
\treturn strings.Join(words, "-{pkg.index}-")
}}

// Sum adds up Mix over xs.
func Sum(xs []int) int {{
\ts := 0
\tfor _, x := range xs {{
\t\ts += Mix(x)
\t}}
\treturn s
}}
"""


def source_test(pkg, value):
    xs = [1, 2, 3, 40]
    total = sum(mix(pkg.base, x) for x in xs)
    return f"""package {pkg.name}

import "testing"

func TestValue(t *testing.T) {{
\tif got := Value(); got != {value} {{
\t\tt.Fatalf("Value() = %d, want {value}", got)
\t}}
\tif got := Label(); got != "{pkg.name}={value}" {{
\t\tt.Fatalf("Label() = %q", got)
\t}}
}}

func TestHelpers(t *testing.T) {{
\tvar c Counter
\tc.Add()
\tif got := c.Add(); got != {2 * pkg.step} {{
\t\tt.Fatalf("Counter after two adds = %d, want {2 * pkg.step}", got)
\t}}
\tif got := Join([]string{{"a", "b"}}); got != "a-{pkg.index}-b" {{
\t\tt.Fatalf("Join = %q", got)
\t}}
\tif got := Sum([]int{{{", ".join(map(str, xs))}}}); got != {total} {{
\t\tt.Fatalf("Sum = %d, want {total}", got)
\t}}
}}
"""


def source_main(top):
    paths = [p.import_path for p in top] + ["fmt"]
    adds = "".join(f"\ttotal += {p.name}.Value()\n" for p in top)
    return f"""// Command app prints the combined value of the module's top layer.
package main

{import_block(paths)}
func main() {{
\ttotal := 0
{adds}\tfmt.Println("benchmod", total)
}}
"""


WORKSPACE_FILES = {
    "kiln.toml": f"""# Generated by bench/gen_go_module.py: a kiln benchmark workspace.

[workspace]
{MARKER}
""",
    "BUILD.toml": """# Generated by bench/gen_go_module.py.

[go_test.unit]
packages = ["./..."]

[go_binary.app]
main = "./cmd/app"
platforms = ["linux/amd64"]

[go_binary.app4]
main = "./cmd/app"
platforms = ["linux/amd64", "linux/arm64", "darwin/arm64", "windows/amd64"]
ldflags = ["-s", "-w"]
""",
    "go.mod": f"module {MODULE}\n\ngo 1.23\n",
}


def write(root, rel, text):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def prepare_outdir(out):
    """Create OUTDIR, or clear a benchmod workspace generated there before."""
    if not out.exists() or not any(out.iterdir()):
        out.mkdir(parents=True, exist_ok=True)
        return
    kiln_toml = out / "kiln.toml"
    if not (kiln_toml.is_file() and MARKER in kiln_toml.read_text()):
        sys.exit(f"gen_go_module: {out} is not empty and not a benchmod workspace")
    for child in out.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def generate(out, count, layer_count, seed):
    layers = split_layers(count, layer_count)
    wire(layers, random.Random(seed))
    packages = [p for layer in layers for p in layer]
    vals = values(packages)
    prepare_outdir(out)
    for rel, text in WORKSPACE_FILES.items():
        write(out, rel, text)
    for pkg in packages:
        write(out, f"{pkg.dir}/a.go", source_a(pkg))
        write(out, f"{pkg.dir}/b.go", source_b(pkg))
        write(out, f"{pkg.dir}/p_test.go", source_test(pkg, vals[pkg.index]))
    write(out, "cmd/app/main.go", source_main(layers[-1]))
    roots = count - len({d.index for p in packages for d in p.deps})
    print(json.dumps({"outdir": str(out), "packages": count, "layers": layer_count,
                      "leaves": len(layers[0]), "roots": roots,
                      "app_output": f"benchmod {sum(vals[p.index] for p in layers[-1])}"}))


def scan_imports(out):
    """Map each package dir of a generated module to the dirs it imports."""
    pattern = re.compile(r'"' + re.escape(MODULE) + r'/([^"]+)"')
    graph = {}
    for a_go in sorted(out.glob("pkg/l*/p*/a.go")):
        graph[a_go.parent.relative_to(out).as_posix()] = pattern.findall(a_go.read_text())
    graph["cmd/app"] = pattern.findall((out / "cmd/app/main.go").read_text())
    return graph


def dependents(graph, target):
    """Every package that imports target, directly or transitively."""
    found, changed = set(), True
    while changed:
        changed = False
        for pkg, deps in graph.items():
            if pkg not in found and any(d == target or d in found for d in deps):
                found.add(pkg)
                changed = True
    return sorted(found)


def append_function(pkg_dir, number=None):
    """Append a new, unused function to b.go; return the edit's number."""
    path = pkg_dir / "b.go"
    text = path.read_text()
    n = len(re.findall(r"^func Touched\d+", text, re.M)) + 1
    path.write_text(text + f"""
// Touched{n} was appended by gen_go_module.py --touch-leaf (edit {n}).
func Touched{n}() int {{
\treturn Base + {n}
}}
""")
    return path, n


def edit_body(pkg_dir, number=None):
    """Make Value() store the edit's number in a package variable.

    Value's result stays the same, so every test still passes, but the code
    that importers link changes, so no build or test cache can skip them.
    """
    path = pkg_dir / "a.go"
    text = path.read_text()
    found = re.search(r"^\tlastEdit = (\d+)\n", text, re.M)
    if found:
        n = number if number is not None else int(found.group(1)) + 1
        text = text.replace(found.group(0), f"\tlastEdit = {n}\n")
    else:
        n = number if number is not None else 1
        text = text.replace("func Value() int {\n", f"func Value() int {{\n\tlastEdit = {n}\n")
        text += "\n// lastEdit is written by Value; gen_go_module.py --touch-kind body bumps it.\nvar lastEdit int\n"
    path.write_text(text)
    return path, n


def rewrite_number(pkg_dir, pattern, number):
    """Replace the number `pattern` (one group) finds in a.go, in place."""
    path = pkg_dir / "a.go"
    text = path.read_text()
    found = re.search(pattern, text, re.M)
    if not found:
        sys.exit(f"gen_go_module: {path} has no line matching {pattern!r} (generated by an older version?)")
    n = number if number is not None else int(found.group(1)) + 1
    start, end = found.span(1)
    path.write_text(text[:start] + str(n) + text[end:])
    return path, n


def edit_comment(pkg_dir, number=None):
    """Rewrite the comment inside Value()'s body: every line stays where it is."""
    return rewrite_number(pkg_dir, r"^\t// Note (\d+): ", number)


def edit_doc(pkg_dir, number=None):
    """Rewrite the second line of the package doc comment, above the package clause."""
    return rewrite_number(pkg_dir, r"^// Revision (\d+): ", number)


TOUCHES = {"append": append_function, "body": edit_body, "comment": edit_comment, "doc": edit_doc}


def touch_leaf(out, leaf, kind, number=None):
    """Edit one leaf package and report which packages depend on it."""
    if not (out / "cmd/app/main.go").is_file():
        sys.exit(f"gen_go_module: {out} holds no generated module")
    graph = scan_imports(out)
    leaf = leaf or next(p for p in graph if p.startswith("pkg/l0/"))
    if graph.get(leaf) != []:
        sys.exit(f"gen_go_module: {leaf} is not a leaf package of {out}")
    path, n = TOUCHES[kind](out / leaf, number)
    deps = dependents(graph, leaf)
    print(json.dumps({"touched": str(path), "package": f"{MODULE}/{leaf}",
                      "kind": kind, "edit": n, "dependents": len(deps),
                      "affected_packages": 1 + len(deps), "total_packages": len(graph),
                      "reaches_main": "cmd/app" in deps}))


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--packages", type=int, default=200, help="number of packages (default 200)")
    ap.add_argument("--layers", type=int, help="number of layers (default round(N ** 0.4))")
    ap.add_argument("--seed", type=int, default=1, help="seed of the import graph (default 1)")
    ap.add_argument("--touch-leaf", nargs="?", const="", metavar="PKGDIR",
                    help="edit a leaf package of an existing generated workspace")
    ap.add_argument("--touch-kind", choices=sorted(TOUCHES), default="append",
                    help="append: add an unused function (default); "
                         "body: change code that importers link; "
                         "comment: change a comment inside a function body; "
                         "doc: change the package doc comment")
    ap.add_argument("--touch-number", type=int, metavar="N",
                    help="write N as the edit's number instead of the previous one + 1 "
                         "(body, comment, doc)")
    args = ap.parse_args(argv)
    if args.touch_number is not None and args.touch_kind == "append":
        ap.error("--touch-number goes with --touch-kind body, comment or doc")
    if args.packages < 2:
        ap.error("--packages must be at least 2")
    args.layers = args.layers or max(2, round(args.packages ** 0.4))
    if not 2 <= args.layers <= args.packages:
        ap.error("--layers must be between 2 and --packages")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.touch_leaf is not None:
        touch_leaf(args.outdir, args.touch_leaf, args.touch_kind, args.touch_number)
    else:
        generate(args.outdir, args.packages, args.layers, args.seed)


if __name__ == "__main__":
    main()
