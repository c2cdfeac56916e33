"""RelStorage's side of the pack tests.

    pgx_pack.py build DSN hp|hf BLOB_DIR [via-new]
        creates the schema and commits a fixed history (after the root's
        creation) (garbage, replaced
        revisions, blobs, references made and dropped after the pack
        point); prints every commit's tid, then "PACK <tid>" naming the
        commit to pack to. With via-new, an object dropped before the pack
        point is referenced again only through an object created after it.
    pgx_pack.py more DSN hp|hf BLOB_DIR
        commits a little more; prints the new tids.
    pgx_pack.py pack DSN hp|hf BLOB_DIR TID 0|1
        packs with RelStorage to TID (exact), with or without GC.
    pgx_pack.py verify DSN hp|hf BLOB_DIR
        loads every object reachable from the root, and every blob among
        them; prints "objects N blobs M".
"""
import sys

import transaction
import ZODB
from persistent import Persistent
from persistent.mapping import PersistentMapping as PM
from ZODB.blob import Blob
from ZODB.serialize import referencesf
from ZODB.utils import u64, z64
from relstorage.adapters.postgresql import PostgreSQLAdapter
from relstorage.options import Options
from relstorage.storage import RelStorage


def open_storage(dsn, mode, blob_dir, gc=True):
    options = Options(keep_history=(mode == "hp"), blob_dir=blob_dir,
                      shared_blob_dir=False, pack_gc=gc)
    return RelStorage(PostgreSQLAdapter(dsn=dsn, options=options),
                      options=options)


def blob(data):
    b = Blob()
    with b.open("w") as f:
        f.write(data)
    return b


def commit(conn):
    transaction.commit()
    # The connection's own storage instance knows the tid it committed.
    return u64(conn._storage.lastTransaction())


def build(conn, root, via_new):
    # Opening the database committed the root.
    real_root = root._p_jar.get(z64)
    real_root._p_activate()
    tids = [u64(real_root._p_serial)]
    root["a"] = PM(x=1)
    root["b"] = PM(c=PM(v=0))
    root["blob1"] = blob(b"one")
    tids.append(commit(conn))
    root["a"]["x"] = 2
    root["g"] = PM(child=PM(leaf=PM()))
    root["gblob"] = blob(b"garbage blob")
    tids.append(commit(conn))
    del root["g"]
    del root["gblob"]
    tids.append(commit(conn))
    root["b"]["c"]["v"] = 1
    with root["blob1"].open("w") as f:
        f.write(b"one, replaced")
    tids.append(commit(conn))
    x = PM(inner=PM(), xblob=blob(b"x's blob"))
    root["x"] = x
    tids.append(commit(conn))
    del root["x"]
    tids.append(commit(conn))
    pack_at = tids[-1]
    # After the pack point: x referenced again (directly, or through an
    # object newer than the pack point), and b dropped.
    root["y"] = PM(held=x) if via_new else x
    root["a"]["x"] = 3
    tids.append(commit(conn))
    del root["b"]
    tids.append(commit(conn))
    return tids, pack_at


def more(conn, root):
    tids = []
    del root["y"]
    tids.append(commit(conn))
    root["a"]["x"] = 4
    root["z"] = PM(zblob=blob(b"z"))
    tids.append(commit(conn))
    return tids


def verify(root):
    seen, blobs, todo = set(), 0, [root]
    while todo:
        obj = todo.pop()
        if obj._p_oid in seen:
            continue
        seen.add(obj._p_oid)
        if isinstance(obj, Blob):
            with obj.open("r") as f:
                f.read()
            blobs += 1
            continue
        for value in obj.values():
            if isinstance(value, Persistent):
                todo.append(value)
    return len(seen), blobs


def main():
    cmd, dsn, mode, blob_dir = sys.argv[1:5]
    if cmd == "pack":
        storage = open_storage(dsn, mode, blob_dir, gc=sys.argv[6] == "1")
        storage.pack(int(sys.argv[5]), referencesf)
        storage.close()
        return
    db = ZODB.DB(open_storage(dsn, mode, blob_dir))
    conn = db.open()
    root = conn.root()
    if cmd == "build":
        tids, pack_at = build(conn, root, sys.argv[5:] == ["via-new"])
        print(*tids)
        print("PACK", pack_at)
    elif cmd == "more":
        print(*more(conn, root))
    elif cmd == "verify":
        print("objects %d blobs %d" % verify(root))
    else:
        raise SystemExit("unknown command " + cmd)
    conn.close()
    db.close()


if __name__ == "__main__":
    main()
