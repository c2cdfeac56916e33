"""Pack with garbage collection over ZEO: after db.pack() an object made
unreachable (and its unreachable child) can no longer be loaded, reachable
ones stay with their current state, and non-current revisions are gone.

usage: pack.py PORT TAG
"""

import sys
import time

from persistent.mapping import PersistentMapping
from ZODB.POSException import POSKeyError

from harness import check, client, emit, open_db, protocol

port, tag = int(sys.argv[1]), sys.argv[2]
db, conn, tm = open_db(port)
root = conn.root()
root[tag] = PersistentMapping(
    keep=PersistentMapping(v=1),
    drop=PersistentMapping(child=PersistentMapping(v=9)),
)
tm.commit()
keep, drop = root[tag]["keep"], root[tag]["drop"]
keep_oid, drop_oid, child_oid = keep._p_oid, drop._p_oid, drop["child"]._p_oid
old_keep_serial = keep._p_serial
keep["v"] = 2
tm.commit()
del root[tag]["drop"]
tm.commit()
last = db.lastTransaction()

time.sleep(0.01)  # the pack time must not precede the last commit's time
db.pack()

fresh = client(port)  # empty cache: loads go to the server
gone = {}
for name, oid in (("drop", drop_oid), ("child", child_oid)):
    try:
        fresh.load(oid)
        gone[name] = False
    except POSKeyError:
        gone[name] = True
check(all(gone.values()), "unreachable objects survived the pack: %r" % gone)
data, serial = fresh.load(keep_oid)
check(serial == keep._p_serial, "the reachable object's serial changed")
try:
    fresh.loadSerial(keep_oid, old_keep_serial)
    old_revision_gone = False
except POSKeyError:
    old_revision_gone = True
check(old_revision_gone, "a non-current revision survived a pack to now")
check(fresh.lastTransaction() == last, "pack changed the last transaction")

tm.begin()
check(root[tag]["keep"]["v"] == 2, "the reachable object reads back")
db2, conn2, tm2 = open_db(port)
check(conn2.root()[tag]["keep"]["v"] == 2, "a new client reads the kept object")
check("drop" not in conn2.root()[tag], "a new client sees drop removed")

emit(dict(protocol=protocol(fresh), gone=gone, keep=root[tag]["keep"]["v"]))
fresh.close()
db.close()
db2.close()
