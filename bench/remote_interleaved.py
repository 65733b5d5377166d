#!/usr/bin/env python3
"""Remote cache benchmark, interleaved: two kiln binaries as client and as server, and
curl --parallel, timed round by round.

    KEEP=1 bench/remote.sh --runs 1          # prints "kept /tmp/kiln-bench-remote.XXXX"
    bench/remote_interleaved.py /tmp/kiln-bench-remote.XXXX OLD_KILN NEW_KILN [ROUNDS]

bench/remote.sh lets hyperfine run each case's runs one after another, so on a shared
machine a burst of load lands on one case and not the next. Here every round runs every
case once, in an order that rotates from round to round, and the medians are compared.
Both binaries serve a copy of the kept server directory (`kiln serve` on loopback); the
cases are a remote build (empty local cache, `kiln-out/` deleted) by each client against
each server, and curl --parallel (16 at a time) of every blob from each server.
"""

import os
import re
import shutil
import statistics
import subprocess
import sys
import time


def main():
    work, old, new = sys.argv[1:4]
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 20
    servers = start_servers(work, {"old": old, "new": new})
    try:
        times = measure(work, cases(work, servers, {"old": old, "new": new}), rounds)
    finally:
        for proc in servers.values():
            proc[1].terminate()
    report(times, rounds)


def start_servers(work, binaries):
    servers = {}
    for name, binary in binaries.items():
        root = f"{work}/server-{name}"
        if not os.path.exists(root):
            shutil.copytree(f"{work}/server", root)
        port = free_port()
        log = open(f"{work}/serve-{name}.log", "w")
        cmd = [binary, "serve", "--listen", f"127.0.0.1:{port}", "--dir", root]
        servers[name] = (port, subprocess.Popen(cmd, stderr=log))
        with open(f"{work}/blobs.cfg") as f:
            blobs = re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", f.read())
        with open(f"{work}/blobs-{name}.cfg", "w") as f:
            f.write(blobs)
    time.sleep(1)
    return servers


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cases(work, servers, binaries):
    ws = f"{work}/b/elsewhere/ws"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "check": True}

    def remote(client, server):
        def prepare():
            shutil.rmtree(f"{work}/cache-b", ignore_errors=True)
            shutil.rmtree(f"{ws}/kiln-out", ignore_errors=True)

        url = f"http://127.0.0.1:{servers[server][0]}"
        cmd = [binaries[client], "build", "-j", "2", "--remote-cache", url]
        env = dict(os.environ, KILN_CACHE=f"{work}/cache-b")
        return prepare, lambda: subprocess.run(cmd, cwd=ws, env=env, **quiet)

    def curl(server):
        def prepare():
            shutil.rmtree(f"{work}/dl", ignore_errors=True)
            os.mkdir(f"{work}/dl")

        cfg = f"{work}/blobs-{server}.cfg"
        cmd = ["curl", "-sS", "--fail", "--parallel", "--parallel-max", "16", "-K", cfg]
        return prepare, lambda: subprocess.run(cmd, **quiet)

    out = {}
    for server in ["old", "new"]:
        for client in ["old", "new"]:
            out[f"remote, {client} client, {server} server"] = remote(client, server)
        out[f"curl-par, {server} server"] = curl(server)
    return out


def measure(work, cases, rounds):
    names = list(cases)
    times = {name: [] for name in names}
    for prepare, run in cases.values():  # warm-up
        prepare()
        run()
    print("load average before:", " ".join(open("/proc/loadavg").read().split()[:3]))
    for i in range(rounds):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            prepare, run = cases[name]
            prepare()
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    print("load average after:", " ".join(open("/proc/loadavg").read().split()[:3]))
    return times


def report(times, rounds):
    print(f"{'case':34} {'median':>7} {'min':>7} {'mean':>7}  ({rounds} rounds)")
    for name, values in times.items():
        print(
            f"{name:34} {statistics.median(values):7.3f} {min(values):7.3f}"
            f" {statistics.mean(values):7.3f}"
        )
    med = {name: statistics.median(values) for name, values in times.items()}
    for server in ["old", "new"]:
        for client in ["old", "new"]:
            ratio = med[f"remote, {client} client, {server} server"] / med[f"curl-par, {server} server"]
            print(f"remote / curl-par, {client} client, {server} server: {ratio:.2f}x")


if __name__ == "__main__":
    main()
