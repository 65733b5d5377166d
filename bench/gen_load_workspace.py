#!/usr/bin/env python3
"""Generate kiln workspaces of many genrules, for measuring how BUILD.toml loading scales.

    python3 bench/gen_load_workspace.py OUTDIR --targets 20000 [--files 1] [--chain]

Writes OUTDIR/kiln.toml and the targets' BUILD.toml files:
- with --files 1 (the default), every target in OUTDIR/BUILD.toml;
- with --files N > 1, targets spread evenly over OUTDIR/pNNN/BUILD.toml (N packages);
- with --chain, each target depends on the one before it (`srcs = [":tK-1"]`, so one
  file only): a dependency chain as deep as there are targets.

Target K is `[genrule.tKKKKK]` with `outs = ["tKKKKK.txt"]` and `cmd = "echo K > $OUT"`:
about 65 bytes of BUILD.toml per target. The first target's label is printed on stdout
(`//:t00000` or `//p000:t00000`), and the last one's after it, for the benchmark to ask
for. The same arguments give the same bytes.
"""

import argparse
import os


def target(k, chain):
    srcs = f'srcs = [":t{k - 1:05}"]\n' if chain and k else ""
    return f'[genrule.t{k:05}]\n{srcs}outs = ["t{k:05}.txt"]\ncmd = "echo {k} > $OUT"\n\n'


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("outdir")
    p.add_argument("--targets", type=int, default=20000)
    p.add_argument("--files", type=int, default=1)
    p.add_argument("--chain", action="store_true")
    args = p.parse_args()
    if args.targets < 1 or args.files < 1 or args.targets % args.files:
        p.error("--targets must be a positive multiple of --files")
    if args.chain and args.files != 1:
        p.error("--chain keeps its targets in one file")
    os.makedirs(args.outdir, exist_ok=True)
    with open(os.path.join(args.outdir, "kiln.toml"), "w") as f:
        f.write('[workspace]\nname = "load"\n')
    per_file = args.targets // args.files
    for i in range(args.files):
        package = "" if args.files == 1 else f"p{i:03}"
        directory = os.path.join(args.outdir, package)
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "BUILD.toml"), "w") as f:
            for k in range(i * per_file, (i + 1) * per_file):
                f.write(target(k, args.chain))
    first = "" if args.files == 1 else "p000"
    last = "" if args.files == 1 else f"p{args.files - 1:03}"
    print(f"//{first}:t00000 //{last}:t{args.targets - 1:05}")


if __name__ == "__main__":
    main()
