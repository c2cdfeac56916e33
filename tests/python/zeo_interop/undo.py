"""Undo over ZEO: undoLog lists the transactions with their user and
description, undoing one and committing reverts the object (also in the
undoing client's own cache), and history() reports every revision.

usage: undo.py PORT TAG
"""

import sys

from persistent.mapping import PersistentMapping

from harness import check, emit, open_db, protocol, text

port, tag = int(sys.argv[1]), sys.argv[2]
db, conn, tm = open_db(port)
root = conn.root()


def commit(user, description):
    txn = tm.get()
    txn.user = user
    txn.description = description
    tm.commit()


root[tag] = PersistentMapping(title="one")
commit("alice", "create %s" % tag)
doc = root[tag]
doc["title"] = "two"
commit("bob", "retitle %s" % tag)

log = db.undoLog(0, 20)
check(len(log) >= 2, "undoLog has %d entries" % len(log))
newest = [(text(e["user_name"]), text(e["description"])) for e in log[:2]]
check(
    newest == [("bob", "retitle %s" % tag), ("alice", "create %s" % tag)],
    "undoLog's newest entries are %r" % newest,
)
check(all(isinstance(e["time"], float) for e in log), "undoLog times")
check(log[0]["time"] >= log[1]["time"], "undoLog order")

db.undo(log[0]["id"], tm.get())  # joins the transaction of tm, not the global one
commit("carol", "undo retitle")
tm.begin()
check(doc["title"] == "one", "after undo the title is %r" % doc["title"])

# The undo is itself undoable: the log's newest entry is it.
log = db.undoLog(0, 20)
check(text(log[0]["description"]) == "undo retitle", "undo's own undoLog entry")

history = db.history(doc._p_oid, 10)
entries = [(text(h["user_name"]), text(h["description"])) for h in history]
check(
    entries == [("carol", "undo retitle"), ("bob", "retitle %s" % tag),
                ("alice", "create %s" % tag)],
    "history is %r" % entries,
)
check(history[0]["tid"] == doc._p_serial, "history's newest tid is the serial")
# FileStorage reports a record's pickle length: the undo wrote a backpointer.
sizes = [h["size"] for h in history]
check(sizes[0] == 0 and sizes[1] > 0 and sizes[2] > 0, "history sizes %r" % sizes)

# A second client agrees.
db2, conn2, tm2 = open_db(port)
check(conn2.root()[tag]["title"] == "one", "another client sees the undo")

emit(dict(protocol=protocol(db.storage), history=entries, title=doc["title"]))
db.close()
db2.close()
