"""Read-only access over ZEO.

usage: read_only.py PORT TAG writable   (a writable server)
       read_only.py PORT TAG server     (the same file served with -r)

writable: commits TAG's data, then checks that a read_only=True client reads
    it but cannot commit, and that the server itself refuses a write call
    from that client's read-only connection.
server: a read_only_fallback client connects read-only and reads the data;
    commits fail with ReadOnlyError; the server refuses writes; a client
    insisting on writing cannot connect.
"""

import sys

from persistent.mapping import PersistentMapping
from ZEO.Exceptions import ClientDisconnected
from ZODB.POSException import ReadOnlyError

from harness import check, client, emit, fail, open_db, protocol

port, tag, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]


def refused(action, what):
    try:
        action()
    except ReadOnlyError:
        return "ReadOnlyError"
    fail("%s succeeded on a read-only connection" % what)


def server_refuses_tpc_begin(storage):
    # The server, not only the client library, must refuse: send the call
    # the client library would have stopped.
    return refused(
        lambda: storage._call("tpc_begin", 1, "", "", {}, None, " "),
        "a raw tpc_begin",
    )


def read_only_checks(db, conn, tm):
    check(db.storage.isReadOnly(), "the storage does not say it is read-only")
    check(conn.root()[tag]["v"] == 1, "read-only client reads the data")
    conn.root()[tag]["v"] = 2
    try:
        tm.commit()
        fail("a commit succeeded on a read-only client")
    except ReadOnlyError:
        tm.abort()
    return server_refuses_tpc_begin(db.storage)


if mode == "writable":
    db, conn, tm = open_db(port)
    conn.root()[tag] = PersistentMapping(v=1)
    tm.commit()
    db.close()
    rdb, rconn, rtm = open_db(port, read_only=True)
    raw = read_only_checks(rdb, rconn, rtm)
    emit(dict(protocol=protocol(rdb.storage), server=raw))
    rdb.close()
elif mode == "server":
    rdb, rconn, rtm = open_db(port, read_only_fallback=True)
    raw = read_only_checks(rdb, rconn, rtm)
    storage = rdb.storage
    refused(storage.new_oid, "new_oid")
    try:
        writer = client(port, wait_timeout=2)
        writer.close()
        fail("a writing client connected to a read-only server")
    except ClientDisconnected:
        pass
    emit(dict(protocol=protocol(storage), server=raw))
    rdb.close()
else:
    fail("unknown mode %r" % mode)
