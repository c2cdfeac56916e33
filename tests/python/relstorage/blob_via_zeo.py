"""A blob through zeo-server serving PostgreSQL with blobs in the database.

    blob_via_zeo.py PORT

One ZEO client commits a blob; a second one, with an empty blob cache of
its own, loads it (the server's sendBlob). Prints "ok".
"""
import os
import sys

import transaction
import ZEO
from ZODB.blob import Blob

DATA = b"a blob kept in the database " * 1000


def main():
    port = int(sys.argv[1])
    writer = ZEO.DB(("127.0.0.1", port), blob_dir=os.path.abspath("cache-1"),
                    wait_timeout=30)
    conn = writer.open()
    conn.root()["b"] = Blob(DATA)
    transaction.commit()
    conn.close()
    writer.close()
    reader = ZEO.DB(("127.0.0.1", port), blob_dir=os.path.abspath("cache-2"),
                    wait_timeout=30)
    conn = reader.open()
    with conn.root()["b"].open() as f:
        assert f.read() == DATA, "other bytes"
    conn.close()
    reader.close()
    print("ok")


if __name__ == "__main__":
    main()
