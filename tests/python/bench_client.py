"""Benchmark the stock Python ZEO client: the workloads of `zeo-client bench`.

usage: bench_client.py --server HOST:PORT [--storage NAME] [--clients 1,4,8]
                       [--duration S | --ops N] [--objects N]
                       [--object-size BYTES] [--workloads ping,load,commit,commit100]

Each client is its own ZEO.ClientStorage (its own connection and I/O
thread), driven by its own Python thread. Workloads:

  ping       round trips of the smallest request (`ping`)
  load       cold loads: storage.loadBefore(oid, maxtid) of random oids in
             1..N with a zero-size client cache, so every load reaches the
             server (the data must exist: `zeo-client bench --prepare-only`)
  commit     transactions storing one object (created first, then updated)
  commit100  transactions storing 100 objects

Prints one JSON object per workload and client count, the same keys as
`zeo-client bench --json`: client, workload, clients, ops, seconds,
ops_per_sec, p50_us, p99_us. Threads share the GIL, which is part of what
the Python client costs.
"""

import argparse
import json
import logging
import math
import sys
import threading
import time

from ZODB.Connection import TransactionMetaData
from ZODB.POSException import POSKeyError
from ZODB.utils import maxtid
from ZODB.utils import p64
from ZODB.utils import z64

import ZEO.ClientStorage


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--server', required=True)
    p.add_argument('--storage', default='1')
    p.add_argument('--clients', default='1,4,8')
    p.add_argument('--duration', type=float, default=None)
    p.add_argument('--ops', type=int, default=None)
    p.add_argument('--objects', type=int, default=10000)
    p.add_argument('--object-size', type=int, default=1024)
    p.add_argument('--workloads', default='ping,load,commit,commit100')
    p.add_argument('--timeout', type=float, default=30.0)
    args = p.parse_args(argv)
    if args.duration is not None and args.ops is not None:
        p.error('--duration and --ops exclude each other')
    if args.duration is None and args.ops is None:
        args.duration = 3.0
    args.clients = [int(c) for c in args.clients.split(',') if c]
    args.workloads = [w for w in args.workloads.split(',') if w]
    for w in args.workloads:
        if w not in ('ping', 'load', 'commit', 'commit100'):
            p.error('unknown workload %r' % w)
    host, _, port = args.server.rpartition(':')
    args.address = (host or '127.0.0.1', int(port))
    return args


def object_data(size):
    # The bytes zeo-client bench writes.
    return bytes((i * 31 % 251) for i in range(size))


def open_client(args):
    return ZEO.ClientStorage.ClientStorage(
        args.address, storage=args.storage, cache_size=0,
        wait_timeout=args.timeout)


class Worker:
    """One client: set up before the clock starts, then a timed loop."""

    def __init__(self, storage, workload, index, args, data):
        self.storage = storage
        self.workload = workload
        self.args = args
        self.data = data
        self.x = 0x9e3779b97f4a7c15 ^ (index + 1)
        self.oids = []
        self.serial = z64
        self.samples = []
        self.done = 0
        self.error = None
        if workload in ('commit', 'commit100'):
            count = 1 if workload == 'commit' else 100
            self.oids = [storage.new_oid() for _ in range(count)]
            self.step()

    def step(self):
        s = self.storage
        if self.workload == 'ping':
            s._call('ping')
        elif self.workload == 'load':
            x = self.x
            x ^= (x << 13) & 0xFFFFFFFFFFFFFFFF
            x ^= x >> 7
            x ^= (x << 17) & 0xFFFFFFFFFFFFFFFF
            self.x = x
            oid = p64(1 + x % self.args.objects)
            if s.loadBefore(oid, maxtid) is None:
                raise POSKeyError(oid)
        else:
            t = TransactionMetaData()
            s.tpc_begin(t)
            try:
                for oid in self.oids:
                    s.store(oid, self.serial, self.data, '', t)
                s.tpc_vote(t)
                self.serial = s.tpc_finish(t)
            except BaseException:
                s.tpc_abort(t)
                raise

    def run(self, barrier, share):
        try:
            barrier.wait()
            deadline = (time.monotonic() + self.args.duration
                        if self.args.duration is not None else None)
            samples = self.samples
            while self.done < share and (
                    deadline is None or time.monotonic() < deadline):
                t = time.perf_counter()
                self.step()
                samples.append(time.perf_counter() - t)
                self.done += 1
        except BaseException as e:  # reported by the main thread
            self.error = e


def percentile(sorted_samples, p):
    if not sorted_samples:
        return 0.0
    rank = min(max(math.ceil(len(sorted_samples) * p), 1),
               len(sorted_samples))
    return sorted_samples[rank - 1]


def run_workload(storages, workload, args, data):
    if workload == 'load':
        try:
            storages[0].loadBefore(p64(args.objects), maxtid)
        except POSKeyError:
            sys.exit('oid %d does not exist: prepare the data first'
                     % args.objects)
    n = len(storages)
    share = (math.ceil(args.ops / n) if args.ops is not None
             else float('inf'))
    workers = [Worker(s, workload, i, args, data)
               for i, s in enumerate(storages)]
    barrier = threading.Barrier(n + 1)
    threads = [threading.Thread(target=w.run, args=(barrier, share))
               for w in workers]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.monotonic()
    for t in threads:
        t.join()
    seconds = time.monotonic() - started
    for w in workers:
        if w.error is not None:
            raise w.error
    samples = sorted(s for w in workers for s in w.samples)
    ops = sum(w.done for w in workers)
    return {
        'client': 'python',
        'workload': workload,
        'clients': n,
        'ops': ops,
        'seconds': seconds,
        'ops_per_sec': ops / seconds if seconds > 0 else 0.0,
        'p50_us': percentile(samples, 0.50) * 1e6,
        'p99_us': percentile(samples, 0.99) * 1e6,
    }


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.ERROR)
    data = object_data(args.object_size)
    for count in args.clients:
        storages = [open_client(args) for _ in range(count)]
        try:
            for workload in args.workloads:
                result = run_workload(storages, workload, args, data)
                print(json.dumps(result), flush=True)
        finally:
            for s in storages:
                s.close()


if __name__ == '__main__':
    main()
