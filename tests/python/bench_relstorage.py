"""Benchmark Python RelStorage used directly on PostgreSQL: the load and
commit workloads of `bench_client.py`, with the storage in the process.

usage: bench_relstorage.py --dsn DSN [--clients 1,4] [--duration S]
                           [--objects N] [--workloads load,commit,commit100]

Each client is its own RelStorage instance (`new_instance()`: its own
database connections), driven by its own Python thread; RelStorage's local
cache is off (`cache-local-mb 0`), so every load reaches the database, as
the ZEO client's zero-size cache makes every load reach the server. The
objects are the ones `zeo-client bench --prepare-only` wrote through
zeo-server into the same database. Prints `bench_client.py`'s JSON lines,
with client "relstorage".
"""

import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_client  # noqa: E402

from relstorage.adapters.postgresql import PostgreSQLAdapter  # noqa: E402
from relstorage.options import Options  # noqa: E402
from relstorage.storage import RelStorage  # noqa: E402


def main(argv):
    dsn = None
    rest = []
    it = iter(argv)
    for arg in it:
        if arg == '--dsn':
            dsn = next(it)
        else:
            rest.append(arg)
    if dsn is None:
        sys.exit('--dsn is required')
    # bench_client's parser wants a server; it is not used here.
    args = bench_client.parse_args(['--server', '127.0.0.1:1'] + rest)
    if 'ping' in args.workloads:
        sys.exit('ping has no meaning without a server')
    logging.basicConfig(level=logging.ERROR)
    # create_schema lets RelStorage add its own stored procedures to the
    # schema zeo-server created (it needs them to commit).
    options = Options(keep_history=True, cache_local_mb=0, create_schema=True)
    base = RelStorage(PostgreSQLAdapter(dsn=dsn, options=options),
                      options=options)
    data = bench_client.object_data(args.object_size)
    try:
        for count in args.clients:
            storages = [base.new_instance() for _ in range(count)]
            try:
                for workload in args.workloads:
                    result = bench_client.run_workload(
                        storages, workload, args, data)
                    result['client'] = 'relstorage'
                    print(bench_client.json.dumps(result), flush=True)
            finally:
                for s in storages:
                    s.release()
    finally:
        base.close()


if __name__ == '__main__':
    main(sys.argv[1:])
