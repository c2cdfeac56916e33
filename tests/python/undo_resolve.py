"""Undo that needs conflict resolution, done by ZODB's FileStorage.

usage: undo_resolve.py make DATA_FS
       undo_resolve.py undo DATA_FS TID_HEX

`make` writes a catalog-like index (an OOBTree of key -> document id and
its BTrees.Length) and two later transactions that each add a key, and
prints the tid of the first of them as JSON. `undo` undoes that
transaction with FileStorage's own undo (which resolves the conflict with
the later one through tryToResolveConflict) and prints the current record
of every object it changed, as hex.
"""

import base64
import json
import sys

import transaction
import ZODB
from BTrees.Length import Length
from BTrees.OOBTree import OOBTree
from persistent.mapping import PersistentMapping
from ZODB.Connection import TransactionMetaData
from ZODB.FileStorage import FileStorage


def make(path):
    db = ZODB.DB(FileStorage(path, create=True))
    conn = db.open()
    conn.root()["index"] = PersistentMapping(
        idx=OOBTree({"a": 1, "c": 3}), n=Length(2))
    transaction.commit()
    index = conn.root()["index"]
    index["idx"]["m"] = 13
    index["n"].change(1)
    transaction.commit()
    first = index["idx"]._p_serial
    index["idx"]["z"] = 26
    index["n"].change(1)
    transaction.commit()
    print(json.dumps({"tid": first.hex()}))
    db.close()


def undo(path, tid_hex):
    storage = FileStorage(path)
    tid = bytes.fromhex(tid_hex)
    t = TransactionMetaData()
    storage.tpc_begin(t)
    # An undo id is the tid in base64, as undoLog gives it.
    _, oids = storage.undo(base64.encodebytes(tid).rstrip(), t)
    storage.tpc_vote(t)
    storage.tpc_finish(t)
    records = {oid.hex(): storage.load(oid)[0].hex() for oid in oids}
    print(json.dumps({"records": records}))
    storage.close()


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    else:
        undo(sys.argv[2], sys.argv[3])
