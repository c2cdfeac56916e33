"""The zeo-server side of the shared-blob-dir interop test.

    shared_blobs_via_zeo.py PORT DSN BLOB_DIR hp|hf

A ZEO client of zeo-server (serving the database with shared-blob-dir
true on BLOB_DIR) commits a blob; RelStorage, opened on the same database
with the same shared BLOB_DIR, reads it in place. Then RelStorage commits
a blob and the ZEO client reads it through zeo-server. Prints "ok".
"""
import os
import sys
import time

import transaction
import ZEO
import ZODB
from ZODB.blob import Blob
from relstorage.adapters.postgresql import PostgreSQLAdapter
from relstorage.options import Options
from relstorage.storage import RelStorage

OURS = b"committed through zeo-server " * 1000
THEIRS = b"committed by RelStorage " * 1000


def main():
    port, dsn, blob_dir, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    cache = os.path.join(os.getcwd(), "zeo-blob-cache")
    zeo = ZEO.DB(("127.0.0.1", port), blob_dir=cache, wait_timeout=30)
    conn = zeo.open()
    conn.root()["ours"] = Blob(OURS)
    transaction.commit()
    ours = conn.root()["ours"]
    ours._p_activate()
    oid, serial = ours._p_oid, ours._p_serial

    options = Options(keep_history=(mode == "hp"), blob_dir=blob_dir,
                      shared_blob_dir=True)
    rs = RelStorage(PostgreSQLAdapter(dsn=dsn, options=options),
                    options=options)
    with open(rs.loadBlob(oid, serial), "rb") as f:
        assert f.read() == OURS, "RelStorage read other bytes"
    rs_db = ZODB.DB(rs)
    rs_conn = rs_db.open()
    rs_conn.root()["theirs"] = Blob(THEIRS)
    transaction.commit()
    rs_conn.close()
    rs_db.close()

    # zeo-server hears of RelStorage's commit by polling the database.
    deadline = time.monotonic() + 60
    while True:
        transaction.begin()
        if "theirs" in conn.root():
            break
        assert time.monotonic() < deadline, "the ZEO client never saw it"
        time.sleep(0.1)
    with conn.root()["theirs"].open() as f:
        assert f.read() == THEIRS, "the ZEO client read other bytes"
    conn.close()
    zeo.close()
    print("ok")


if __name__ == "__main__":
    main()
