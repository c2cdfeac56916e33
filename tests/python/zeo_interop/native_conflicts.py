"""Conflicts the server resolves itself: four stock ZEO clients insert
disjoint keys into one OOBTree (a single inline bucket) and bump one
Length, each on a stale snapshot, and every commit goes through with no
ConflictError and no client-side resolution call; undoing an old
transaction on a catalog-like index (an OOBTree and its Length, changed
again later) succeeds and keeps the later change.

With MODE `client` (a server with native-conflict-resolution false) the
clients must resolve every such conflict themselves instead, still without
a ConflictError; undo resolves in the storage either way.

usage: native_conflicts.py PORT TAG [ROUNDS [MODE]]
"""

import sys

import transaction
import ZEO.ClientStorage
from BTrees.Length import Length
from BTrees.OOBTree import OOBTree
from persistent.mapping import PersistentMapping
from ZODB.POSException import ConflictError

from harness import check, emit, open_db, protocol, sees, wait_for

port, tag = int(sys.argv[1]), sys.argv[2]
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
mode = sys.argv[4] if len(sys.argv) > 4 else "native"

# Count every conflict this process resolves itself.
client_resolutions = []
_resolve = ZEO.ClientStorage.ClientStorage.tryToResolveConflict


def counting_resolve(self, *args, **kwargs):
    client_resolutions.append(args[0])
    return _resolve(self, *args, **kwargs)


ZEO.ClientStorage.ClientStorage.tryToResolveConflict = counting_resolve

clients = [open_db(port) for _ in range(4)]
db0, c0, tm0 = clients[0]
c0.root()[tag] = PersistentMapping(tree=OOBTree(), n=Length())
tm0.commit()
for db, c, tm in clients[1:]:
    wait_for(sees(tm, lambda: tag in c.root()), "the tree to reach every client")

conflict_errors = 0
expected = set()
for r in range(rounds):
    # Every client reads the same revision of the tree...
    for db, c, tm in clients:
        tm.begin()
        len(c.root()[tag]["tree"])
    # ...and commits its own key on top of it, one after the other.
    for i, (db, c, tm) in enumerate(clients):
        key = "k%02d-%d" % (r, i)
        c.root()[tag]["tree"][key] = i
        c.root()[tag]["n"].change(1)
        expected.add(key)
        try:
            tm.commit()
        except ConflictError:
            conflict_errors += 1
            tm.abort()

check(conflict_errors == 0, "%d ConflictErrors reached the application"
      % conflict_errors)
if mode == "native":
    check(not client_resolutions, "the clients resolved %d conflicts themselves"
          % len(client_resolutions))
else:
    check(len(client_resolutions) >= 3 * rounds,
          "the clients resolved only %d conflicts" % len(client_resolutions))
wait_for(sees(tm0, lambda: set(c0.root()[tag]["tree"]) == expected),
         "client 0 to see every key")
check(c0.root()[tag]["n"]() == len(expected),
      "Length %d, expected %d" % (c0.root()[tag]["n"](), len(expected)))
status = db0.storage.server_status()
resolved = status.get("conflicts_resolved", status.get(b"conflicts_resolved"))
if mode == "native":
    check(resolved >= 3 * rounds, "server resolved %r conflicts" % resolved)
else:
    check(resolved == 0, "server resolved %r conflicts" % resolved)

# A catalog-like index: key -> document id, with its Length.
index_key = tag + "-index"
c0.root()[index_key] = PersistentMapping(idx=OOBTree({"a": 0}), n=Length(1))
tm0.commit()
index = c0.root()[index_key]
index["idx"]["m"] = 1
index["n"].change(1)
tm0.get().note("add m")
tm0.commit()
index["idx"]["z"] = 2
index["n"].change(1)
tm0.get().note("add z")
tm0.commit()
undo_id = None
for entry in db0.undoLog(0, 10):
    description = entry["description"]
    if isinstance(description, bytes):
        description = description.decode("utf-8")
    if description == "add m":
        undo_id = entry["id"]
        break
check(undo_id is not None, "the transaction to undo is in the undo log")
db0.undo(undo_id, tm0.get())
tm0.get().note("undo add m")
tm0.commit()
wait_for(sees(tm0, lambda: sorted(c0.root()[index_key]["idx"]) == ["a", "z"]),
         "the undo to leave keys a and z")
check(c0.root()[index_key]["n"]() == 2,
      "index Length %d after undo" % c0.root()[index_key]["n"]())

emit(dict(
    protocol=protocol(db0.storage),
    keys=len(expected),
    conflicts_resolved=resolved,
    client_resolutions=len(client_resolutions),
    undone=sorted(c0.root()[index_key]["idx"]),
))
for db, c, tm in clients:
    db.close()
