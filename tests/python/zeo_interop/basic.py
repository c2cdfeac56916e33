"""Connects to a server, commits and reads back through a second client.

usage: basic.py PORT TAG [STORAGE_NAME]
"""

import sys

from persistent.mapping import PersistentMapping

from harness import check, emit, open_db, protocol, sees, wait_for

port, tag = int(sys.argv[1]), sys.argv[2]
name = sys.argv[3] if len(sys.argv) > 3 else "1"
db1, c1, tm1 = open_db(port, storage=name)
c1.root()[tag] = PersistentMapping(v=tag)
tm1.commit()
db2, c2, tm2 = open_db(port, storage=name)
check(c2.root()[tag]["v"] == tag, "a second client reads the commit")
emit(dict(protocol=protocol(db1.storage), storage=db1.storage._storage))
db1.close()
db2.close()
