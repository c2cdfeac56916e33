"""RelStorage's side of the blob_chunk interop tests.

    pgx_blobs.py store DSN hp|hf BLOB_DIR FILE...
        creates the schema when absent and commits each FILE in turn as the
        new content of the blob at root['b']; prints "OID TID..." (integers).
    pgx_blobs.py read DSN hp|hf BLOB_DIR OID TID OUT
        copies the blob of OID at TID, as RelStorage loads it, to OUT.

A mode ending in "+shared" (hp+shared) opens RelStorage with
shared-blob-dir true: BLOB_DIR is then where blobs live, not a cache.
"""
import shutil
import sys

import transaction
import ZODB
from ZODB.blob import Blob
from ZODB.utils import p64, u64
from relstorage.adapters.postgresql import PostgreSQLAdapter
from relstorage.options import Options
from relstorage.storage import RelStorage


def open_storage(dsn, mode, blob_dir):
    mode, _, shared = mode.partition("+")
    options = Options(keep_history=(mode == "hp"), blob_dir=blob_dir,
                      shared_blob_dir=(shared == "shared"))
    return RelStorage(PostgreSQLAdapter(dsn=dsn, options=options),
                      options=options)


def main():
    cmd, dsn, mode, blob_dir = sys.argv[1:5]
    storage = open_storage(dsn, mode, blob_dir)
    if cmd == "store":
        db = ZODB.DB(storage)
        conn = db.open()
        root = conn.root()
        tids = []
        for path in sys.argv[5:]:
            if "b" not in root:
                root["b"] = Blob()
            with root["b"].open("w") as out, open(path, "rb") as src:
                shutil.copyfileobj(src, out)
            transaction.commit()
            # ZODB ghostifies a blob once stored: load it to learn its tid.
            root["b"]._p_activate()
            tids.append(u64(root["b"]._p_serial))
        print(u64(root["b"]._p_oid), *tids)
        conn.close()
        db.close()
    elif cmd == "read":
        oid, tid, out = int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
        shutil.copyfile(storage.loadBlob(p64(oid), p64(tid)), out)
        storage.close()
    else:
        raise SystemExit("unknown command " + cmd)


if __name__ == "__main__":
    main()
