"""Server restart with a persistent client cache.

usage: restart.py PORT TAG VAR_DIR MARKER_DIR

Client A (persistent cache `TAG` in VAR_DIR) reads an object from the server
on PORT. The test then stops that server and starts one on another port,
whose number it writes to MARKER_DIR/stopped; through it client B changes the
object. The test then stops that server too and restarts the first address,
writing MARKER_DIR/restarted. Client A, which stayed up throughout, must
reconnect and read the changed object, not its cached copy.
"""

import os
import sys
import time

from persistent.mapping import PersistentMapping

from harness import check, emit, fail, open_db, protocol, sees, wait_for

port, tag, var, markers = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]


def signal_test(name, content=""):
    path = os.path.join(markers, name)
    with open(path + ".tmp", "w") as f:
        f.write(content)
    os.rename(path + ".tmp", path)


def await_test(name):
    path = os.path.join(markers, name)
    wait_for(lambda: os.path.exists(path), "the test to write %s" % name, timeout=30)
    with open(path) as f:
        return f.read()


db_a, conn_a, tm_a = open_db(port, client=tag, var=var)
root_a = conn_a.root()
root_a[tag] = PersistentMapping(v=1, other=PersistentMapping(w=1))
tm_a.commit()
data_a = root_a[tag]
check(data_a["v"] == 1 and data_a["other"]["w"] == 1, "client A reads back")
cache_file = os.path.join(var, "%s-1.zec" % tag)
check(os.path.exists(cache_file), "no persistent cache file %s" % cache_file)

signal_test("loaded")
other_port = int(await_test("stopped"))
wait_for(lambda: not db_a.storage.is_connected(), "client A to notice the stop")

db_b, conn_b, tm_b = open_db(other_port)
conn_b.root()[tag]["v"] = 2
conn_b.root()[tag]["other"]["w"] = 2
tm_b.commit()
changed_at = conn_b.root()[tag]._p_serial
db_b.close()
signal_test("changed")

await_test("restarted")
wait_for(db_a.storage.is_connected, "client A to reconnect", timeout=30)
wait_for(lambda: db_a.storage.lastTransaction() >= changed_at,
         "client A to learn of the change")
tm_a.begin()
check(data_a["v"] == 2, "client A read a stale v=%r" % data_a["v"])
check(data_a["other"]["w"] == 2, "client A read a stale w=%r" % data_a["other"]["w"])
check(data_a._p_serial == changed_at, "client A's serial is stale")

verification = getattr(db_a.storage._server.client, "verify_result", None)
report = dict(protocol=protocol(db_a.storage), verify_result=verification)
db_a.close()
emit(report)
