"""A RelStorage 4 application sharing a PostgreSQL database with zeo-rs.

Usage: peer.py COMMAND DSN MODE [ARGS...], MODE being hp (history-preserving)
or hf (history-free). Commands:

  commit KEY VALUE   root[KEY] = VALUE and commit; prints "tid N"
  dump               prints "last N", "root ITEMS", then each transaction
                     ("txn TID USER_HEX DESC_HEX" and its "rec OID MD5"
                     lines, hp) or each current record ("cur OID TID MD5", hf)
  load OID           prints "load TID MD5" for the object's current revision
  race KEY VALUE     reads the root, prints "ready", waits for a line on
                     stdin, then sets root[KEY] = VALUE and commits; prints
                     "tid N" or "ConflictError"
"""
import hashlib
import sys

import transaction
import ZODB
from ZODB.POSException import ConflictError
from ZODB.utils import p64, u64
from relstorage.adapters.postgresql import PostgreSQLAdapter
from relstorage.options import Options
from relstorage.storage import RelStorage


def md5(data):
    return "None" if data is None else hashlib.md5(data).hexdigest()


def open_storage(dsn, mode):
    options = Options(keep_history=(mode == "hp"))
    return RelStorage(PostgreSQLAdapter(dsn=dsn, options=options), options=options)


def main(argv):
    command, dsn, mode, args = argv[1], argv[2], argv[3], argv[4:]
    storage = open_storage(dsn, mode)
    db = ZODB.DB(storage)
    try:
        if command == "commit":
            conn = db.open()
            conn.root()[args[0]] = args[1]
            transaction.commit()
            print("tid", u64(conn.root()._p_serial))
            conn.close()
        elif command == "race":
            conn = db.open()
            root = conn.root()
            sorted(root.items())
            print("ready", flush=True)
            sys.stdin.readline()
            root[args[0]] = args[1]
            try:
                transaction.commit()
                print("tid", u64(root._p_serial))
            except ConflictError:
                transaction.abort()
                print("ConflictError")
            conn.close()
        elif command == "dump":
            conn = db.open()
            print("last", u64(storage.lastTransaction()))
            print("root", sorted(conn.root().items()))
            conn.close()
            if mode == "hp":
                for txn in storage.iterator():
                    print("txn", u64(txn.tid), txn.user.hex() or "-",
                          txn.description.hex() or "-")
                    for rec in txn:
                        print("rec", u64(rec.oid), md5(rec.data))
            else:
                next_oid = None
                while True:
                    oid, tid, data, next_oid = storage.record_iternext(next_oid)
                    print("cur", u64(oid), u64(tid), md5(data))
                    if next_oid is None:
                        break
        elif command == "load":
            data, tid = storage.load(p64(int(args[0])))
            print("load", u64(tid), md5(data))
        else:
            raise SystemExit("unknown command %r" % command)
    finally:
        db.close()


if __name__ == "__main__":
    main(sys.argv)
