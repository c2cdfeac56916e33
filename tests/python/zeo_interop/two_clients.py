"""Two ZEO clients share PersistentMappings and an OOBTree of a few thousand
keys, read each other's commits and see invalidations of objects they hold.

usage: two_clients.py PORT TAG   (TAG namespaces the root keys this run uses)

Client 1 is a plain client (invalidations arrive asynchronously, so it polls
with transaction.begin()); client 2 uses server_sync, so a begin() after
client 1's commit returned must already see it.
"""

import sys

from BTrees.OOBTree import OOBTree
from persistent.mapping import PersistentMapping

from harness import check, emit, open_db, protocol, sees, wait_for

port, tag = int(sys.argv[1]), sys.argv[2]
KEYS = 3000

db1, c1, tm1 = open_db(port)
db2, c2, tm2 = open_db(port, server_sync=True)
root1 = c1.root()

tree = OOBTree()
for i in range(KEYS):
    tree["k%05d" % i] = i
root1[tag] = PersistentMapping(people=PersistentMapping(alice=1), tree=tree)
tm1.commit()

# Client 2 sees client 1's commit at once (server_sync).
tm2.begin()
data2 = c2.root()[tag]
tree2 = data2["tree"]
check(len(tree2) == KEYS, "client 2 sees %d keys, not %d" % (len(tree2), KEYS))
check(tree2["k01234"] == 1234, "client 2 reads a wrong value")
check(list(tree2.keys())[:2] == ["k00000", "k00001"], "client 2 key order")
check(data2["people"]["alice"] == 1, "client 2 reads people")

# Client 2 writes; client 1 reads it once the invalidation has arrived.
data2["people"]["bob"] = 2
for i in range(KEYS, KEYS + 500):
    tree2["k%05d" % i] = i
tm2.commit()
wait_for(sees(tm1, lambda: "bob" in root1[tag]["people"]), "client 1 to see bob")
tree1 = root1[tag]["tree"]
check(len(tree1) == KEYS + 500, "client 1 sees %d keys" % len(tree1))
check(tree1["k03100"] == 3100, "client 1 reads client 2's key")

# Invalidation of objects client 2 has cached: the buckets and the mapping
# it loaded change under it after client 1 commits.
check(tree2["k00007"] == 7 and data2["people"]["alice"] == 1, "client 2 cache")
tree1["k00007"] = "seven"
del tree1["k00008"]
root1[tag]["people"]["alice"] = 100
tm1.commit()
tm2.begin()
check(tree2["k00007"] == "seven", "client 2 kept a stale bucket")
check("k00008" not in tree2, "client 2 still sees a deleted key")
check(data2["people"]["alice"] == 100, "client 2 kept a stale mapping")
check(len(tree2) == KEYS + 499, "client 2 length after the change")

report = dict(
    protocol=protocol(db1.storage),
    protocol2=protocol(db2.storage),
    keys=len(tree2),
    people=dict(data2["people"]),
    last_transaction=db1.storage.lastTransaction().hex(),
)
check(
    db2.storage.lastTransaction() == db1.storage.lastTransaction(),
    "the clients disagree on the last transaction",
)
db1.close()
db2.close()
emit(report)
