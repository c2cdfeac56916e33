"""Check a Data.fs with Python ZODB and print what Python sees in it, as JSON.

usage: check_file.py DATA_FS

Exits non-zero, with the reason on stderr, when:
  * ZODB's fstest finds a format error;
  * FileStorage cannot open or iterate the file;
  * opening with the file's .index and opening a copy without it (so the
    index is rebuilt by scanning) give different views.

Otherwise prints one JSON object (ids as 16 hex digits, bytes as hex):

  fstest            fstest's output ("no errors detected" with -v)
  last_transaction  storage.lastTransaction()
  transactions      storage.iterator(): tid, status, user, description,
                    extension, records [{oid, tid, data or null, data_txn}]
  current           load() of every oid in the index: {oid: {tid, data}} or
                    {"error": "POSKeyError"} (deleted, or creation undone)
  index             null without a .index file; else {loaded, error, pos,
                    entries, matches_rebuilt, sane}: whether the index
                    unpickles, agrees with an index rebuilt by scanning, and
                    passes FileStorage's own sanity check
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

from ZODB.FileStorage import FileStorage
from ZODB.fsIndex import fsIndex
from ZODB.POSException import POSKeyError


def fail(message):
    sys.stderr.write("check_file.py: %s\n" % message)
    sys.exit(1)


def run_fstest(path):
    proc = subprocess.run(
        [sys.executable, "-m", "ZODB.scripts.fstest", "-v", path],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        fail("fstest rejects %s:\n%s%s" % (path, proc.stdout, proc.stderr))
    # -v makes fstest list every transaction; its verdict is the last line.
    return proc.stdout.strip().splitlines()[-1]


def view(path):
    """Everything a client could read from the file."""
    storage = FileStorage(path, read_only=True)
    try:
        transactions = []
        oids = set()
        for txn in storage.iterator():
            records = []
            for rec in txn:
                oids.add(rec.oid)
                records.append(
                    {
                        "oid": rec.oid.hex(),
                        "tid": rec.tid.hex(),
                        "data": None if rec.data is None else rec.data.hex(),
                        "data_txn": (None if rec.data_txn is None
                                     else rec.data_txn.hex()),
                    }
                )
            transactions.append(
                {
                    "tid": txn.tid.hex(),
                    "status": txn.status,
                    "user": txn.user.hex(),
                    "description": txn.description.hex(),
                    "extension": txn.extension_bytes.hex(),
                    "records": records,
                }
            )

        # Every object the index knows. record_iternext would be the public
        # way, but it raises POSKeyError at the first deleted object.
        current = {}
        for oid in storage._index.keys():
            try:
                data, tid = storage.load(oid)
                current[oid.hex()] = {"tid": tid.hex(), "data": data.hex()}
            except POSKeyError:
                current[oid.hex()] = {"error": "POSKeyError"}
        missing = oids.difference(storage._index.keys())
        if missing:
            fail("records name oids the index lacks: %s"
                 % sorted(o.hex() for o in missing))

        return {
            "last_transaction": storage.lastTransaction().hex(),
            "transactions": transactions,
            "current": current,
        }
    finally:
        storage.close()


def check_index(index_path, rebuilt_from):
    """Compare a .index file with the index FileStorage builds by scanning."""
    report = {"loaded": False, "error": None, "pos": None, "entries": None,
              "matches_rebuilt": False, "sane": False}
    try:
        info = fsIndex.load(index_path)
        index = info["index"]
        pos = int(info["pos"])
    except Exception as e:  # any failure to read it is the finding
        report["error"] = "%s: %s" % (type(e).__name__, e)
        return report
    report.update(loaded=True, pos=pos, entries=len(index))

    storage = FileStorage(rebuilt_from, read_only=True)
    try:
        rebuilt = dict(storage._index.items())
        report["matches_rebuilt"] = (
            dict(index.items()) == rebuilt and pos == storage._pos
        )
        report["sane"] = bool(storage._sane(index, pos))
    finally:
        storage.close()
    return report


def main():
    if len(sys.argv) != 2:
        fail("usage: check_file.py DATA_FS")
    path = os.path.abspath(sys.argv[1])
    fstest = run_fstest(path)

    with tempfile.TemporaryDirectory() as tmp:
        bare = os.path.join(tmp, "Data.fs")
        shutil.copyfile(path, bare)
        without_index = view(bare)

        with_index = view(path)
        if with_index != without_index:
            for key in with_index:
                if with_index[key] != without_index[key]:
                    fail("%s differs with and without the .index file"
                         % key)

        index_path = path + ".index"
        index = (check_index(index_path, bare)
                 if os.path.exists(index_path) else None)

    result = dict(with_index, fstest=fstest, index=index)
    json.dump(result, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
