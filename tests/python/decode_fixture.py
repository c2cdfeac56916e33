"""Build a small Data.fs for the record decoding tools and describe it.

usage: decode_fixture.py OUT_DIR

Writes OUT_DIR/Data.fs holding a root PersistentMapping that refers to a
PersistentList (which refers back to the root and to an OOBTree), with
text, bytes, numbers and a long byte string, and prints one JSON object:
{"oids": {name: oid as 16 hex digits}, "refs": {name: [oid hex...]}}
where refs are what ZODB.serialize.referencesf finds in each record.
"""

import json
import os
import sys

import transaction
from BTrees.OOBTree import OOBTree
from persistent.list import PersistentList
from persistent.mapping import PersistentMapping
from ZODB import DB
from ZODB.FileStorage import FileStorage
from ZODB.serialize import referencesf
from ZODB.utils import u64


def main(out_dir):
    path = os.path.join(out_dir, "Data.fs")
    db = DB(FileStorage(path))
    conn = db.open()
    root = conn.root()
    items = PersistentList([1, "two", b"\x00\x01\x02"])
    tree = OOBTree()
    tree["alpha"] = 1
    tree["beta"] = items
    items.append(tree)
    root["name"] = "décodé"
    root["items"] = items
    root["blob"] = b"\xff" * 1000
    root["ratio"] = 0.25
    root["flags"] = (True, None)
    transaction.commit()
    items.append(root)
    transaction.commit()
    oids = {
        "root": u64(root._p_oid),
        "items": u64(items._p_oid),
        "tree": u64(tree._p_oid),
    }
    storage = db.storage
    refs = {}
    for name, oid in oids.items():
        data, _ = storage.load(root._p_oid.__class__(oid.to_bytes(8, "big")))
        refs[name] = ["%016x" % u64(r) for r in referencesf(data)]
    conn.close()
    db.close()
    print(json.dumps({"oids": {k: "%016x" % v for k, v in oids.items()}, "refs": refs}))


if __name__ == "__main__":
    main(sys.argv[1])
