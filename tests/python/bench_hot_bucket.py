"""Benchmark conflict resolution on one hot OOBTree bucket.

usage: bench_hot_bucket.py --server HOST:PORT [--clients 8] [--duration S]
                           [--label NAME]

Stock ZODB over ZEO: each client (its own ClientStorage, connection and
Python thread) commits, in a loop, an insert or a delete of its own key in
one shared OOBTree kept to a single bucket (a sentinel key sorts first, and
each client's key comes and goes), so concurrent commits conflict on the
same object and only resolution lets them through. Whoever resolves (the
server natively, the server with Python, or the client) is what differs
between servers.

Prints one JSON object: label, clients, commits, seconds, commits_per_sec,
conflict_errors (commits retried after a ConflictError reached the
application) and client_resolutions (conflicts this process resolved).
"""

import argparse
import json
import logging
import threading
import time

import transaction
import ZEO.ClientStorage
import ZODB
from BTrees.OOBTree import OOBTree
from ZODB.POSException import ConflictError

client_resolutions = []
_resolve = ZEO.ClientStorage.ClientStorage.tryToResolveConflict


def counting_resolve(self, *args, **kwargs):
    client_resolutions.append(1)
    return _resolve(self, *args, **kwargs)


ZEO.ClientStorage.ClientStorage.tryToResolveConflict = counting_resolve


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--server', required=True)
    p.add_argument('--clients', type=int, default=8)
    p.add_argument('--duration', type=float, default=3.0)
    p.add_argument('--label', default='')
    args = p.parse_args()
    host, _, port = args.server.rpartition(':')
    args.address = (host or '127.0.0.1', int(port))
    return args


def open_db(args):
    return ZODB.DB(ZEO.ClientStorage.ClientStorage(
        args.address, wait_timeout=30))


class Worker:
    def __init__(self, db, index):
        self.db = db
        self.tm = transaction.TransactionManager()
        self.conn = db.open(self.tm)
        self.key = 'c%03d' % index
        self.commits = 0
        self.conflicts = 0
        self.error = None

    def run(self, barrier, deadline):
        try:
            barrier.wait()
            while time.monotonic() < deadline[0]:
                self.tm.begin()
                tree = self.conn.root()['hot']
                if self.key in tree:
                    del tree[self.key]
                else:
                    tree[self.key] = self.commits
                try:
                    self.tm.commit()
                    self.commits += 1
                except ConflictError:
                    self.tm.abort()
                    self.conflicts += 1
        except BaseException as e:  # reported by the main thread
            self.error = e


def main():
    args = parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    dbs = [open_db(args) for _ in range(args.clients)]
    tm = transaction.TransactionManager()
    conn = dbs[0].open(tm)
    conn.root()['hot'] = OOBTree({'': 0})  # sorts first, never deleted
    tm.commit()
    conn.close()
    workers = [Worker(db, i) for i, db in enumerate(dbs)]
    barrier = threading.Barrier(len(workers) + 1)
    deadline = [float('inf')]
    threads = [threading.Thread(target=w.run, args=(barrier, deadline))
               for w in workers]
    for t in threads:
        t.start()
    started = time.monotonic()
    deadline[0] = started + args.duration
    barrier.wait()
    for t in threads:
        t.join()
    seconds = time.monotonic() - started
    for w in workers:
        if w.error is not None:
            raise w.error
    commits = sum(w.commits for w in workers)
    print(json.dumps({
        'label': args.label,
        'clients': args.clients,
        'commits': commits,
        'seconds': seconds,
        'commits_per_sec': commits / seconds if seconds > 0 else 0.0,
        'conflict_errors': sum(w.conflicts for w in workers),
        'client_resolutions': len(client_resolutions),
    }), flush=True)
    for db in dbs:
        db.close()


if __name__ == '__main__':
    main()
