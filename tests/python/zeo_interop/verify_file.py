"""Checks a Data.fs written by the server with Python ZODB: fstest's check
finds no error, FileStorage opens it read-only (with the server's .index if
present, which must load without complaint and be used) and a DB reads the root and
every object reachable from it.

usage: verify_file.py DATA_FS
"""

import logging
import os
import sys

import ZODB
from ZODB.FileStorage import FileStorage
from ZODB.scripts import fstest

from harness import check, emit, fail

path = sys.argv[1]
try:
    fstest.check(path)
except fstest.FormatError as error:
    fail("fstest: %s" % error)

complaints = []


class Collect(logging.Handler):
    def emit(self, record):
        complaints.append(record.getMessage())


logging.getLogger("ZODB").addHandler(Collect(logging.WARNING))
storage = FileStorage(path, read_only=True)
db = ZODB.DB(storage)
conn = db.open()
root = conn.root()
seen, todo = set(), [root]
while todo and len(seen) < 100000:
    obj = todo.pop()
    if obj._p_oid in seen:
        continue
    seen.add(obj._p_oid)
    obj._p_activate()
    state = obj.__getstate__()
    values = []
    if isinstance(state, dict):
        values = list(state.get("data", state).values())
    elif isinstance(state, tuple):
        # BTrees: nested tuples of keys, values and children.
        stack = list(state)
        while stack:
            item = stack.pop()
            if isinstance(item, tuple):
                stack.extend(item)
            else:
                values.append(item)
    todo.extend(v for v in values if getattr(v, "_p_oid", None) is not None)
check(not complaints, "FileStorage complained: %r" % complaints)
# FileStorage silently rebuilds an index it cannot use; ask it directly.
if os.path.exists(path + ".index"):
    index = "loaded" if storage._restore_index() is not None else "rejected"
else:
    index = "absent"
check(index != "rejected", "FileStorage rejects the server's %s.index" % path)
emit(dict(index=index, root_keys=sorted(root.keys()), reachable=len(seen),
          last_transaction=storage.lastTransaction().hex(), objects=len(storage)))
db.close()
