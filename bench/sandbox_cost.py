#!/usr/bin/env python3
"""What one bubblewrap sandbox costs, option by option: the per-action price of kiln's
bwrap mode (engine/src/sandbox/bwrap.rs), measured without kiln.

    python3 bench/sandbox_cost.py [--rounds 40] [--jobs 1] [--dir /mnt/NAME/sb]

Every variant runs `cat` of ten small files in a sandbox built like kiln's: a tmpfs
root with host entries bound read-only, own /proc and /dev, PID/IPC/UTS/network
namespaces, caps dropped, the sandbox root bound at /kiln/ws. The variants differ from
`kiln-before` (every top-level host entry bound, as kiln did before) by one thing each;
two more add to `kiln-after` what kiln run as root adds: `/proc/sys` read-only, then
the covers of `/etc`'s private entries. Variants run interleaved, round after round, so
that a change of the machine's load hits all alike; `--jobs 2` runs each variant two at
a time (as `kiln -j2` does) and reports wall time per run, which shows what
serializes in the kernel. Run it as root under `chrt -f 10` on a shared machine: other
processes' load then barely moves the figures (see bench/README.md, "The sandbox's cost").
"""

import argparse
import os
import shlex
import stat
import statistics
import subprocess
import sys
import threading
import time

SYSTEM = ["bin", "etc", "lib", "lib32", "lib64", "libx32", "nix", "opt", "sbin", "usr"]
OWN = ["proc", "dev", "tmp", "kiln"]


def host_entries(only=None, empties_as_dirs=False):
    args = []
    for name in sorted(os.listdir("/")):
        if name in OWN or (only is not None and name not in only):
            continue
        path = "/" + name
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif empties_as_dirs and os.path.isdir(path) and not os.path.ismount(path) \
                and not os.listdir(path) and os.stat(path).st_mode & 0o7777 == 0o755:
            args += ["--dir", path]
        else:
            args += ["--ro-bind", path, path]
    return args


def etc_covers(holder):
    """What kiln run as root binds over /etc's private entries (engine/src/sandbox/
    private.rs): an empty file or directory of mode 0 over each entry others cannot
    read that root without capabilities could (the ACL case left out)."""
    file, empty = os.path.join(holder, "file"), os.path.join(holder, "dir")
    if not os.path.exists(file):
        os.makedirs(empty, exist_ok=True)
        open(file, "w").close()
        os.chmod(file, 0)
        os.chmod(empty, 0)
    groups = set(os.getgroups()) | {os.getegid()}
    args = []
    for top, dirs, files in os.walk("/etc"):
        for name in sorted(dirs) + sorted(files):
            path = os.path.join(top, name)
            st = os.lstat(path)
            is_dir = stat.S_ISDIR(st.st_mode)
            if stat.S_ISLNK(st.st_mode) or st.st_mode & (0o5 if is_dir else 0o4) == (0o5 if is_dir else 0o4):
                continue
            if is_dir:
                dirs.remove(name)
            shift = 6 if st.st_uid == os.geteuid() else 3 if st.st_gid in groups else 0
            want = 0o5 if is_dir else 0o4
            if (st.st_mode >> shift) & want and (is_dir or st.st_size > 0):
                args += ["--ro-bind", empty if is_dir else file, path]
    return args


def variants(root):
    ns = ["--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    misc = ["--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    net = ["--unshare-net", "--tmpfs", "/tmp", "--tmpfs", "/run"]
    ws = ["--bind", root, "/kiln/ws", "--tmpfs", "/kiln/ws/.kiln/tmp", "--chdir", "/kiln/ws"]
    kiln = ["--ro-bind", "/proc/self/exe", "/kiln/bin/kiln"]
    cmd = ["--", "cat"] + [f"pkg/in{i}.txt" for i in range(10)]
    everything = host_entries()
    system = host_entries(SYSTEM, empties_as_dirs=True)
    own = ["--proc", "/proc", "--dev", "/dev"]

    def bwrap(*parts):
        return ["bwrap"] + [a for p in parts for a in p]

    yield "kiln-before", bwrap(everything, own, ns, misc, net, kiln, ws, cmd)
    yield "no --unshare-net", bwrap(everything, own, ns, misc, net[1:], kiln, ws, cmd)
    yield "no --unshare-pid", bwrap(everything, own, ns[1:], misc, net, kiln, ws, cmd)
    yield "no --cap-drop", bwrap(everything, own, ns, misc[:2], net, kiln, ws, cmd)
    yield "--dev-bind /dev", bwrap(everything, ["--proc", "/proc", "--dev-bind", "/dev", "/dev"],
                                   ns, misc, net, kiln, ws, cmd)
    yield "empties as --dir", bwrap(host_entries(empties_as_dirs=True), own, ns, misc, net,
                                    kiln, ws, cmd)
    yield "no kiln binary", bwrap(everything, own, ns, misc, net, ws, cmd)
    yield "kiln-after (system)", bwrap(system, own, ns, misc, net, ws,
                                       ["--remount-ro", "/"], cmd)
    proc_sys = ["--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys", "--dev", "/dev"]
    covers = etc_covers(os.path.join(os.path.dirname(root), "cover"))
    yield "kiln as root: /proc/sys read-only", bwrap(system, proc_sys, ns, misc, net, ws,
                                                   ["--remount-ro", "/"], cmd)
    yield f"kiln as root: and {len(covers) // 3} /etc covers", bwrap(
        system, covers, proc_sys, ns, misc, net, ws, ["--remount-ro", "/"], cmd)
    yield "bwrap --ro-bind / /", ["bwrap", "--ro-bind", "/", "/", "--chdir", root] + cmd
    yield "no sandbox", ["sh", "-c", "cd " + shlex.quote(root) + " && exec " + " ".join(cmd[1:])]


def run_batch(argv, runs, jobs, null):
    def worker(n):
        for _ in range(n):
            subprocess.run(argv, stdout=null, check=True)
    threads = [threading.Thread(target=worker, args=(runs // jobs,)) for _ in range(jobs)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return (time.perf_counter() - start) * 1000 / (runs // jobs * jobs)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--batch", type=int, default=0, help="runs per round (default 2 x jobs)")
    p.add_argument("--dir", default="/tmp/kiln-sandbox-cost")
    a = p.parse_args()
    root = os.path.join(a.dir, "root")
    os.makedirs(os.path.join(root, "pkg"), exist_ok=True)
    os.makedirs(os.path.join(root, ".kiln", "tmp"), exist_ok=True)
    for i in range(10):
        with open(os.path.join(root, "pkg", f"in{i}.txt"), "w") as f:
            f.write(f"file {i}\n")
    batch = a.batch or 2 * a.jobs
    vs = list(variants(root))
    times = {name: [] for name, _ in vs}
    with open(os.devnull, "w") as null:
        for name, argv in vs:  # warm-up, and a check that each variant works
            run_batch(argv, a.jobs, a.jobs, null)
        for _ in range(a.rounds):
            for name, argv in vs:
                times[name].append(run_batch(argv, batch, a.jobs, null))
    base = statistics.median(times[vs[0][0]])
    print(f"-j{a.jobs}, {a.rounds} rounds of {batch} runs each; wall ms per run")
    print(f"| variant | median | p25 | vs {vs[0][0]} |")
    print("|---|---|---|---|")
    for name, _ in vs:
        t = sorted(times[name])
        med = statistics.median(t)
        print(f"| {name} | {med:.2f} | {t[len(t) // 4]:.2f} | {med - base:+.2f} ({med / base:.2f}x) |")


if __name__ == "__main__":
    sys.exit(main())
