"""MVCC over ZEO: connections opened before a commit keep reading the state
as of their snapshot, also for objects they load only after the commit;
storage.loadBefore(oid, tid) returns (data, start, end) of the revision
current just before tid, from the client cache and from the server.

usage: mvcc.py PORT TAG
"""

import sys

import transaction
from persistent.mapping import PersistentMapping
from ZODB.utils import p64, u64

from harness import check, client, emit, open_db, protocol, sees, state, wait_for

port, tag = int(sys.argv[1]), sys.argv[2]
db1, c1, tm1 = open_db(port)
db2, c2, tm2 = open_db(port)
root1 = c1.root()
root1[tag] = PersistentMapping(a=PersistentMapping(v=1), b=PersistentMapping(v=1))
tm1.commit()
t1 = root1[tag]["b"]._p_serial

# Readers on the old snapshot: another client's connection and a second
# connection of the writer's own DB. Both load `a` now, `b` only later.
wait_for(sees(tm2, lambda: c2.root()[tag]["a"]["v"] == 1), "client 2 to see a")
tm3 = transaction.TransactionManager()
c3 = db1.open(tm3)
tm3.begin()
check(c3.root()[tag]["a"]["v"] == 1, "connection 3 reads a")

root1[tag]["a"]["v"] = 2
root1[tag]["b"]["v"] = 2
tm1.commit()
t2 = root1[tag]["b"]._p_serial
check(t2 > t1, "second commit has a later tid")
wait_for(lambda: db2.storage.lastTransaction() >= t2, "client 2 to hear of t2")

check(c2.root()[tag]["a"]["v"] == 1, "client 2's old snapshot changed (a)")
check(c2.root()[tag]["b"]["v"] == 1, "client 2 loaded b from after its snapshot")
check(c3.root()[tag]["a"]["v"] == 1, "connection 3's old snapshot changed (a)")
check(c3.root()[tag]["b"]["v"] == 1, "connection 3 loaded b from after its snapshot")
tm2.begin()
tm3.begin()
check(c2.root()[tag]["b"]["v"] == 2, "client 2 sees the new b after begin")
check(c3.root()[tag]["a"]["v"] == 2, "connection 3 sees the new a after begin")

oid = root1[tag]["b"]._p_oid
fresh = client(port)  # empty cache: every loadBefore goes to the server
results = {}
for name, storage in (("cached", db2.storage), ("server", fresh)):
    before_t2 = storage.loadBefore(oid, t2)
    check(before_t2 is not None, "%s: loadBefore(b, t2) is None" % name)
    data, start, end = before_t2
    check((start, end) == (t1, t2), "%s: loadBefore(b, t2) gives %r" % (name, (start, end)))
    check(state(data)["data"] == {"v": 1}, "%s: old state %r" % (name, state(data)))
    current = storage.loadBefore(oid, p64(u64(t2) + 1))
    check(current is not None, "%s: loadBefore(b, t2+1) is None" % name)
    data, start, end = current
    check((start, end) == (t2, None), "%s: current revision %r" % (name, (start, end)))
    check(state(data)["data"] == {"v": 2}, "%s: current state %r" % (name, state(data)))
    check(storage.loadBefore(oid, t1) is None, "%s: loadBefore(b, t1) not None" % name)
    check(storage.loadSerial(oid, t1) == before_t2[0], "%s: loadSerial(b, t1)" % name)
    results[name] = [t1.hex(), t2.hex()]

emit(dict(protocol=protocol(fresh), t1=t1.hex(), t2=t2.hex(), loads=results))
fresh.close()
db1.close()
db2.close()
