"""One blob transfer through the stock ZEO 6 client, timed, for
``cargo xtask bench`` (xtask/src/bench/blob.rs).

    python bench_blob.py up   PORT FILE CACHE_DIR
    python bench_blob.py down PORT OID TID CACHE_DIR

``up`` commits FILE as a new ``ZODB.blob.Blob`` under the root, as an
application does (the file is copied into the blob cache, then uploaded),
and prints ``OID TID SECONDS``; the database is opened before the clock
starts. ``down`` connects with an empty blob cache, loads the blob of
OID at TID and reads it through, and prints ``SECONDS``; connecting is
timed too, as it is for the Rust client.
"""

import shutil
import sys
import time

import transaction
import ZEO.ClientStorage
import ZODB
from ZODB.blob import Blob


def storage(port, cache):
    return ZEO.ClientStorage.ClientStorage(
        ('127.0.0.1', port), wait_timeout=60, blob_dir=cache)


def up(port, path, cache):
    db = ZODB.DB(storage(port, cache))
    conn = db.open()
    root = conn.root()
    started = time.perf_counter()
    blob = Blob()
    with open(path, 'rb') as src, blob.open('w') as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    root['bench_blob'] = blob
    transaction.commit()
    seconds = time.perf_counter() - started
    # The blob's revision: the transaction just committed.
    print(blob._p_oid.hex(), db.lastTransaction().hex(), '%.6f' % seconds)
    db.close()


def down(port, oid, tid, cache):
    started = time.perf_counter()
    cs = storage(port, cache)
    path = cs.loadBlob(bytes.fromhex(oid), bytes.fromhex(tid))
    with open(path, 'rb') as f:
        while f.read(1 << 20):
            pass
    seconds = time.perf_counter() - started
    cs.close()
    print('%.6f' % seconds)


if __name__ == '__main__':
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == 'up':
        up(port, sys.argv[3], sys.argv[4])
    elif mode == 'down':
        down(port, sys.argv[3], sys.argv[4], sys.argv[5])
    else:
        sys.exit('usage: bench_blob.py up|down ...')
