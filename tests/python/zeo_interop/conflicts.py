"""Write conflicts between two ZEO clients: an unresolvable one raises
ConflictError carrying the object's oid and the (committed, read) serials;
BTrees.Length and OOBTree bucket conflicts are resolved (by zeo-server
itself, natively; see native_conflicts.py) and keep both changes.

usage: conflicts.py PORT TAG
"""

import sys

from BTrees.Length import Length
from BTrees.OOBTree import OOBTree
from persistent.mapping import PersistentMapping
from ZODB.POSException import ConflictError

from harness import check, emit, open_db, protocol, sees, wait_for

port, tag = int(sys.argv[1]), sys.argv[2]
db1, c1, tm1 = open_db(port)
db2, c2, tm2 = open_db(port, server_sync=True)
root1 = c1.root()
root1[tag] = PersistentMapping(
    x=PersistentMapping(v=0), n=Length(), t=OOBTree({"b": 0, "y": 0})
)
tm1.commit()

# Both clients read x at the same revision; client 1 commits first.
tm2.begin()
x2 = c2.root()[tag]["x"]
check(x2["v"] == 0, "client 2 reads x")
read_serial = x2._p_serial
x1 = root1[tag]["x"]
x1["v"] = 1
tm1.commit()
committed_serial = x1._p_serial
check(committed_serial > read_serial, "client 1's commit got a new serial")
x2["v"] = 2  # still on client 2's older snapshot
try:
    tm2.commit()
except ConflictError as error:
    conflict = error
    tm2.abort()
else:
    fail("client 2's conflicting commit succeeded")
check(conflict.oid == x2._p_oid, "conflict oid %r" % (conflict.oid,))
check(
    conflict.get_new_serial() == committed_serial,
    "conflict's committed serial %r, expected %r"
    % (conflict.get_new_serial(), committed_serial),
)
check(
    conflict.get_old_serial() == read_serial,
    "conflict's read serial %r, expected %r"
    % (conflict.get_old_serial(), read_serial),
)
tm2.begin()
check(x2["v"] == 1, "after the conflict client 2 sees client 1's value")

# Conflicts that resolve: Length increments and bucket inserts.
tm2.begin()
n2, t2 = c2.root()[tag]["n"], c2.root()[tag]["t"]
check(n2() == 0 and len(t2) == 2, "client 2 reads n and t")
n1, t1 = root1[tag]["n"], root1[tag]["t"]
n1.change(1)
t1["a"] = 1
tm1.commit()
n2.change(1)
t2["z"] = 2
tm2.commit()  # resolved: must not raise
tm2.begin()
check(n2() == 2, "client 2 sees Length %d, not 2" % n2())
check(list(t2.keys()) == ["a", "b", "y", "z"], "tree keys %r" % list(t2.keys()))
wait_for(sees(tm1, lambda: root1[tag]["n"]() == 2), "client 1 to see Length 2")
check(sorted(root1[tag]["t"].keys()) == ["a", "b", "y", "z"], "client 1 tree")

emit(
    dict(
        protocol=protocol(db1.storage),
        oid=conflict.oid.hex(),
        serials=[s.hex() for s in conflict.serials],
        committed=committed_serial.hex(),
        read=read_serial.hex(),
        length=n2(),
    )
)
db1.close()
db2.close()
