#!/usr/bin/env python3
"""The engine's floor: what N small actions cost a Remote Execution API engine when the
client costs (almost) nothing.

    reapi_floor.py PORT [--actions 1000] [--in-flight 32] [--files 10] [--instance NAME]

Uploads, in one batch before the clock starts, N actions that each run
`/bin/sh -c 'cat f0 ... f9 > out'` over files of 40 bytes in a flat input root (the
work of one genrule of bench/gen_genrule_workspace.py, without kiln's layout, launcher
or tools: the worker's base system gives sh and cat), then executes them all,
`in-flight` at a time, with skip_cache_lookup, and waits for every result. Prints the
wall time of the executions and the medians of the worker's own timestamps.

No client of this engine on this machine can run those N actions faster, so
`floor / cold-local` bounds what remote_exec.sh's cold-remote / cold-local ratio can
reach here, whatever kiln does. It needs grpcio and the REAPI protos, as BuildGrid's
virtual environment (.ci/install-deps) has them: run it with that environment's python.
"""

import argparse
import concurrent.futures
import hashlib
import statistics
import sys
import time

import grpc
from buildgrid._protos.build.bazel.remote.execution.v2 import (
    remote_execution_pb2 as re,
    remote_execution_pb2_grpc as re_grpc,
)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("port", type=int)
    p.add_argument("--actions", type=int, default=1000)
    p.add_argument("--in-flight", type=int, default=32)
    p.add_argument("--files", type=int, default=10)
    p.add_argument("--instance", default="")
    args = p.parse_args()

    channel = grpc.insecure_channel("127.0.0.1:%d" % args.port)
    cas = re_grpc.ContentAddressableStorageStub(channel)
    execution = re_grpc.ExecutionStub(channel)
    blobs = {}

    def put(data):
        digest = re.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
        blobs[digest.hash] = (digest, data)
        return digest

    actions = []
    names = ["f%d" % i for i in range(args.files)]
    for a in range(args.actions):
        root = re.Directory()
        for i, name in enumerate(names):
            content = ("%08d %08d bench input file\n" % (a, i)).encode()[:40]
            root.files.add(name=name, digest=put(content))
        command = re.Command(
            arguments=["/bin/sh", "-c", "cat %s > out" % " ".join(names)],
            output_paths=["out"],
        )
        action = re.Action(
            command_digest=put(command.SerializeToString()),
            input_root_digest=put(root.SerializeToString()),
            do_not_cache=True,
        )
        actions.append(put(action.SerializeToString()))

    batch, size = [], 0
    for digest, data in blobs.values():
        batch.append((digest, data))
        size += len(data)
        if size > 2 << 20:
            upload(cas, args.instance, batch)
            batch, size = [], 0
    upload(cas, args.instance, batch)

    def run(digest):
        request = re.ExecuteRequest(
            instance_name=args.instance, action_digest=digest, skip_cache_lookup=True
        )
        for operation in execution.Execute(request):
            pass
        response = re.ExecuteResponse()
        operation.response.Unpack(response)
        result = response.result
        if response.status.code or result.exit_code:
            sys.exit("reapi_floor.py: an action failed: %s" % response)
        m = result.execution_metadata
        ms = lambda a, b: (b.ToNanoseconds() - a.ToNanoseconds()) / 1e6
        return (
            ms(m.worker_start_timestamp, m.worker_completed_timestamp),
            ms(m.input_fetch_start_timestamp, m.input_fetch_completed_timestamp),
            ms(m.execution_start_timestamp, m.execution_completed_timestamp),
        )

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(args.in_flight) as pool:
        runs = list(pool.map(run, actions))
    wall = time.monotonic() - start
    worker, fetch, execute = (statistics.median(r[i] for r in runs) for i in range(3))
    print(
        "floor: %d actions in %.2f s (%.1f ms an action); worker median %.0f ms "
        "(input fetch %.0f ms, execution %.0f ms)"
        % (args.actions, wall, wall / args.actions * 1000, worker, fetch, execute)
    )
    print("floor_seconds=%.3f" % wall)


def upload(cas, instance, batch):
    if not batch:
        return
    request = re.BatchUpdateBlobsRequest(instance_name=instance)
    for digest, data in batch:
        request.requests.add(digest=digest, data=data)
    for response in cas.BatchUpdateBlobs(request).responses:
        if response.status.code:
            sys.exit("reapi_floor.py: upload refused: %s" % response.status)


if __name__ == "__main__":
    main()
