"""Build Data.fs fixtures with Python ZODB and describe them for the Rust tests.

usage: make_fixture.py OUT_DIR

Writes, under OUT_DIR:

  plain/Data.fs        a history with nested mappings, a large OOBTree, undo,
                       deleteObject, repeated modifications, rich metadata;
  plain/expected.json  everything a reader must reproduce from it;
  packed/Data.fs       a copy of the same history packed with GC at a time
                       between two phases of commits;
  packed/expected.json the same description of the packed file.

expected.json holds, with every id as 16 hex digits and every byte string
as hex:

  last_transaction
  transactions   storage.iterator(): tid, status, user, description,
                 extension (raw pickle bytes), records (oid, tid, data or
                 null, data_txn or null)
  oids           every oid ever written (the union over both files, so the
                 packed description also covers objects that GC removed)
  boundaries     the tids loadBefore is asked at: 0, every transaction's
                 tid, and one past the last
  load_before    {oid: [result per boundary]}; a result is null (no revision
                 that old), {"error": "POSKeyError"}, or {data, start, end}
  load           {oid: {data, tid} or {"error": "POSKeyError"}}
  history        {oid: [{tid, size, user, description}, ...]} newest first
  undo_log       undoLog(0, 1000): [{id, tid, user, description, size}]
  pack_time      (packed only) the pack time in Unix seconds
"""

import base64
import json
import os
import shutil
import sys
import time

import transaction
from BTrees.OOBTree import OOBTree
from persistent.mapping import PersistentMapping
from ZODB import DB
from ZODB.Connection import TransactionMetaData
from ZODB.FileStorage import FileStorage
from ZODB.POSException import POSKeyError
from ZODB.serialize import referencesf
from ZODB.utils import p64
from ZODB.utils import u64


def commit(user, description, **extension):
    txn = transaction.get()
    txn.user = user
    txn.description = description
    for key, value in extension.items():
        txn.setExtendedInfo(key, value)
    txn.commit()


def undo_by_description(db, description):
    """Undo the newest transaction with this description."""
    for entry in db.undoLog(0, 1000):
        # DB.undoLog gives text where the storage gives bytes.
        if entry["description"] in (description, description.encode("utf-8")):
            db.undo(entry["id"])
            return
    raise SystemExit("no undoable transaction %r" % description)


def delete_object(storage, oid):
    """Write a deletion record through the storage's own two-phase commit,
    the way an external garbage collector does."""
    meta = TransactionMetaData("gc", "deleteObject of an unreachable object")
    _data, serial = storage.load(oid)
    storage.tpc_begin(meta)
    storage.deleteObject(oid, serial, meta)
    storage.tpc_vote(meta)
    storage.tpc_finish(meta)


def build_history(path):
    """Commit the fixture's history; returns the pack time between phases."""
    storage = FileStorage(path)
    db = DB(storage)
    conn = db.open()
    root = conn.root()

    # Phase one: everything a pack at pack_time may rewrite or drop.
    root["config"] = PersistentMapping(
        {
            "name": "fixture",
            "nested": PersistentMapping(
                {"level": 2, "deeper": PersistentMapping({"level": 3})}
            ),
        }
    )
    commit("alice", "create config", client="make_fixture", attempt=1)

    tree = OOBTree()
    for i in range(5000):
        tree["key%05d" % i] = ("value", i)
    root["tree"] = tree
    commit("bob", "fill a tree with 5000 keys")

    root["counter"] = PersistentMapping({"n": 0})
    commit("", "")  # empty user, description and extension
    for n in range(1, 4):
        root["counter"]["n"] = n
        commit("carol", "bump counter to %d" % n, n=n)

    for i in range(0, 5000, 250):
        tree["key%05d" % i] = ("changed", i)
    del tree["key04999"]
    root["config"]["nested"]["deeper"]["level"] = 33
    commit("alice", "edit tree and deeper config \N{SNOWMAN}",
           note="unicode \N{SNOWMAN}", data=b"\x00\xff")

    # A transaction that both modifies and creates, then is undone: the
    # modified object gets a backpointer, the created one a "no data" record.
    root["config"]["name"] = "temporary name"
    root["config"]["made_then_undone"] = PersistentMapping({"x": 1})
    commit("dave", "change to be undone")
    undo_by_description(db, "change to be undone")
    commit("dave", "undo it")

    root["doomed"] = PersistentMapping({"fate": "deleted"})
    commit("erin", "create doomed")
    doomed_oid = root["doomed"]._p_oid
    del root["doomed"]
    commit("erin", "unlink doomed")
    delete_object(storage, doomed_oid)
    conn.sync()

    # Unreachable before the pack time: GC must drop these.
    root["scratch"] = PersistentMapping(
        {"a": PersistentMapping({"b": PersistentMapping({"c": 1})})}
    )
    commit("frank", "scratch objects")
    del root["scratch"]
    commit("frank", "drop scratch objects")

    time.sleep(0.05)
    pack_time = time.time()
    time.sleep(0.05)

    # Phase two: after the pack time, so a pack keeps all of it.
    root["counter"]["n"] = 10
    root["late"] = PersistentMapping({"made": "after pack time"})
    commit("grace", "after pack time", phase=2)
    del root["late"]
    root["counter"]["n"] = 11
    commit("grace", "unlink late object (stays: after pack time)")
    for i in range(1, 5000, 500):
        tree["key%05d" % i] = ("late", i)
    commit("heidi", "late tree edits")

    conn.close()
    db.close()
    return pack_time


def hexid(raw):
    return raw.hex()


def describe(path, all_oids, pack_time=None):
    storage = FileStorage(path, read_only=True)
    try:
        transactions = []
        oids = set(all_oids)
        for txn in storage.iterator():
            records = []
            for rec in txn:
                oids.add(rec.oid)
                records.append(
                    {
                        "oid": hexid(rec.oid),
                        "tid": hexid(rec.tid),
                        "data": None if rec.data is None else rec.data.hex(),
                        "data_txn": (None if rec.data_txn is None
                                     else hexid(rec.data_txn)),
                    }
                )
            transactions.append(
                {
                    "tid": hexid(txn.tid),
                    "status": txn.status,
                    "user": txn.user.hex(),
                    "description": txn.description.hex(),
                    "extension": txn.extension_bytes.hex(),
                    "records": records,
                }
            )

        tids = [bytes.fromhex(t["tid"]) for t in transactions]
        last = storage.lastTransaction()
        boundaries = [p64(0)] + tids + [p64(u64(last) + 1)]

        load_before = {}
        load = {}
        history = {}
        for oid in sorted(oids):
            results = []
            for before in boundaries:
                try:
                    found = storage.loadBefore(oid, before)
                except POSKeyError:
                    results.append({"error": "POSKeyError"})
                    continue
                if found is None:
                    results.append(None)
                else:
                    data, start, end = found
                    results.append(
                        {
                            "data": data.hex(),
                            "start": hexid(start),
                            "end": None if end is None else hexid(end),
                        }
                    )
            load_before[hexid(oid)] = results
            try:
                data, tid = storage.load(oid)
                load[hexid(oid)] = {"data": data.hex(), "tid": hexid(tid)}
            except POSKeyError:
                load[hexid(oid)] = {"error": "POSKeyError"}
            try:
                entries = storage.history(oid, 1000)
            except POSKeyError:
                entries = []
            history[hexid(oid)] = [
                {
                    "tid": hexid(e["tid"]),
                    "size": e["size"],
                    "user": e["user_name"].hex(),
                    "description": e["description"].hex(),
                }
                for e in entries
            ]

        undo_log = [
            {
                "id": e["id"].hex(),
                "tid": hexid(base64.decodebytes(e["id"])),
                "user": e["user_name"].hex(),
                "description": e["description"].hex(),
                "size": e["size"],
            }
            for e in storage.undoLog(0, 1000)
        ]

        result = {
            "last_transaction": hexid(last),
            "transactions": transactions,
            "oids": [hexid(o) for o in sorted(oids)],
            "boundaries": [hexid(b) for b in boundaries],
            "load_before": load_before,
            "load": load,
            "history": history,
            "undo_log": undo_log,
        }
        if pack_time is not None:
            result["pack_time"] = pack_time
        return result, oids
    finally:
        storage.close()


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=1, sort_keys=True)
        f.write("\n")


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    out = sys.argv[1]
    plain = os.path.join(out, "plain")
    packed = os.path.join(out, "packed")
    os.makedirs(plain, exist_ok=True)
    os.makedirs(packed, exist_ok=True)

    plain_fs = os.path.join(plain, "Data.fs")
    pack_time = build_history(plain_fs)

    packed_fs = os.path.join(packed, "Data.fs")
    shutil.copyfile(plain_fs, packed_fs)
    storage = FileStorage(packed_fs)
    storage.pack(pack_time, referencesf, gc=True)
    storage.close()
    # The pre-pack copy would only confuse readers of the directory.
    os.remove(packed_fs + ".old")

    plain_desc, oids = describe(plain_fs, ())
    packed_desc, _ = describe(packed_fs, oids, pack_time)
    write_json(os.path.join(plain, "expected.json"), plain_desc)
    write_json(os.path.join(packed, "expected.json"), packed_desc)


if __name__ == "__main__":
    main()
