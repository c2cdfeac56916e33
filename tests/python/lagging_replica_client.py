"""A stock ZEO client failing over to a server behind its cache.

Usage: lagging_replica_client.py PRIMARY_PORT REPLICA_PORT CACHE_DIR

Commits through the primary-backed server with a persistent cache, then
opens the same cache on the replica-backed server only (whose database
has not replayed that commit) and waits, bounded, for ZEO's verdict.
Prints one JSON line: whether the "out of sync" message was logged at
CRITICAL and whether the client connected.
"""

import json
import logging
import sys
import threading

import transaction
import ZEO.ClientStorage
import ZODB

primary_port, replica_port, cache_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]


class Verdict(logging.Handler):
    """Sets `seen` when ZEO logs that the cache is newer than the server."""

    def __init__(self):
        super().__init__(logging.CRITICAL)
        self.seen = threading.Event()

    def emit(self, record):
        if "out of sync" in record.getMessage():
            self.seen.set()


verdict = Verdict()
logging.getLogger("ZEO").addHandler(verdict)

storage = ZEO.ClientStorage.ClientStorage(
    ("127.0.0.1", primary_port), client="app", var=cache_dir, wait_timeout=30
)
db = ZODB.DB(storage)
with db.transaction() as conn:
    conn.root()["value"] = "ahead of the replica"
db.close()

storage = ZEO.ClientStorage.ClientStorage(
    ("127.0.0.1", replica_port),
    client="app",
    var=cache_dir,
    wait=False,
    read_only=True,
)
logged = verdict.seen.wait(30)
print(json.dumps({"out_of_sync_logged": logged, "connected": storage.is_connected()}))
storage.close()
transaction.abort()
