"""storage.iterator() over ZEO: yields every transaction with its metadata
and data records, agreeing with what was committed and with loadSerial;
iterator(start, stop) yields exactly that range.

usage: iterate.py PORT TAG   (on a server whose file was never packed: the
                             first transaction must be the root's creation)
"""

import sys

from persistent.mapping import PersistentMapping

from harness import check, emit, open_db, protocol, text

port, tag = int(sys.argv[1]), sys.argv[2]
db, conn, tm = open_db(port)
root = conn.root()
storage = db.storage

committed = []  # (tid, description, oids)
root[tag] = PersistentMapping()
for i in range(5):
    child = PersistentMapping(i=i)
    root[tag]["c%d" % i] = child
    txn = tm.get()
    txn.description = "%s step %d" % (tag, i)
    txn.user = "iter"
    txn.setExtendedInfo("step", i)
    tm.commit()
    oids = {child._p_oid, root[tag]._p_oid}
    if i == 0:
        oids.add(root._p_oid)
    committed.append((child._p_serial, txn.description, oids))

everything = []
for txn in storage.iterator():
    records = [(r.oid, r.tid, r.data) for r in txn]
    everything.append((txn.tid, txn.status, text(txn.user), text(txn.description),
                       dict(txn.extension), records))
tids = [t[0] for t in everything]
check(tids == sorted(tids) and len(set(tids)) == len(tids), "iterator tid order")
check(tids[-1] == storage.lastTransaction(), "iterator ends at lastTransaction")
check(text(everything[0][3]) == "initial database creation",
      "first transaction is %r" % (everything[0][3],))
by_tid = {t[0]: t for t in everything}
for tid, description, oids in committed:
    check(tid in by_tid, "iterator misses transaction %s" % tid.hex())
    _, status, user, desc, extension, records = by_tid[tid]
    check((status, user, desc) == (" ", "iter", description),
          "metadata %r" % ((status, user, desc),))
    check(extension.get("step") == int(description.rsplit(" ", 1)[1]),
          "extension %r" % extension)
    check({r[0] for r in records} == oids, "records of %s" % description)
    for oid, record_tid, data in records:
        check(record_tid == tid, "record tid")
        check(data == storage.loadSerial(oid, tid), "record data != loadSerial")

first, last = committed[1][0], committed[3][0]
ranged = [t.tid for t in storage.iterator(first, last)]
check(ranged == [c[0] for c in committed[1:4]], "iterator(start, stop) gave %d" % len(ranged))

emit(dict(protocol=protocol(storage), transactions=len(everything),
          records=sum(len(t[5]) for t in everything)))
db.close()
