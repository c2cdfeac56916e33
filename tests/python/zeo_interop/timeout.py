"""Transaction timeout: a client that votes and then hangs holding the
commit lock is cut off by the server (started with a timeout of TIMEOUT
seconds), while another client's commit waits for the lock and succeeds.

usage: timeout.py PORT TAG TIMEOUT
"""

import sys
import time

import transaction
from persistent.mapping import PersistentMapping
from ZODB.utils import z64

from harness import check, client, emit, open_db, protocol, sees, state, wait_for

port, tag, timeout = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
db, conn, tm = open_db(port)
conn.root()[tag] = PersistentMapping(v="initial")
tm.commit()
target = conn.root()[tag]
oid, serial = target._p_oid, target._p_serial

# The hanging client: low-level storage API up to and including the vote.
hung = client(port)
hung_data, hung_serial = hung.load(oid)
check(hung_serial == serial, "the hanging client reads the current serial")
record = hung_data.replace(b"initial", b"hung!!!")  # same length, same pickle
check(state(record)["data"] == {"v": "hung!!!"}, "the edited record")
txn = transaction.Transaction()
hung.tpc_begin(txn)
hung.store(oid, serial, record, "", txn)
hung.tpc_vote(txn)
voted = time.monotonic()

# Meanwhile another client commits; it waits for the lock until the server
# cuts the hanging client off.
target["v"] = "winner"
tm.commit()
waited = time.monotonic() - voted
check(waited >= timeout * 0.5, "the second commit did not wait for the lock (%.2f s)" % waited)

# The hanging client wakes up: its transaction is gone.
try:
    hung.tpc_finish(txn)
    finished = "finished"
except Exception as error:  # ZEO raises ClientDisconnected or a transaction error
    finished = type(error).__name__
    hung.tpc_abort(txn)
check(finished != "finished", "the timed-out transaction was finished")
wait_for(hung.is_connected, "the cut-off client to reconnect")
data, current = hung.load(oid)
check(state(data)["data"] == {"v": "winner"}, "state after the timeout %r" % state(data))
check(current == target._p_serial, "the winner's serial is current")
tm.begin()
check(conn.root()[tag]["v"] == "winner", "the winner's value")

emit(dict(protocol=protocol(db.storage), waited=round(waited, 2), hung=finished))
hung.close()
db.close()
