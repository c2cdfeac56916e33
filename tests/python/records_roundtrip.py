"""Reads what a Rust client stored through a ZEO server, then writes back.

Usage: records_roundtrip.py PORT|DATA_FS check-and-write | check-final

With a port, it connects to the ZEO server there; with a path, it opens that
Data.fs read-only (after the server stopped).

check-and-write: asserts the root Rust wrote (a PersistentMapping with a
title and a PersistentList), then adds a string, an item to the list and an
OOBTree of 200 items (several buckets), and prints the tree's oid.
check-final: asserts the changes Rust made after that.
"""

import sys

import transaction
import ZEO
import ZODB
import ZODB.FileStorage
from BTrees.OOBTree import OOBTree
from persistent.list import PersistentList
from persistent.mapping import PersistentMapping


def main():
    where, phase = sys.argv[1], sys.argv[2]
    if where.isdigit():
        storage = ZEO.client(('127.0.0.1', int(where)), wait_timeout=30)
    else:
        storage = ZODB.FileStorage.FileStorage(where, read_only=True)
    db = ZODB.DB(storage)
    try:
        conn = db.open()
        root = conn.root()
        assert type(root) is PersistentMapping, type(root)
        if phase == 'check-and-write':
            assert root['title'] == 'written by rust', root['title']
            assert root['count'] == 41, root['count']
            todo = root['todo']
            assert type(todo) is PersistentList, type(todo)
            assert list(todo) == ['write docs', 7], list(todo)
            todo.append('from python')
            root['from_python'] = 'hello rust'
            tree = OOBTree()
            for i in range(200):
                tree['k%03d' % i] = i
            root['tree'] = tree
            transaction.commit()
            assert len(tree._p_oid) == 8
            print(tree._p_oid.hex())
        elif phase == 'check-final':
            assert root['count'] == 42, root['count']
            assert list(root['todo']) == ['write docs', 7, 'from python', 'rust again']
            assert root['tree']['k199'] == 199
            print('ok')
        else:
            raise SystemExit('unknown phase ' + phase)
    finally:
        db.close()


if __name__ == '__main__':
    main()
