"""Build a Data.fs with blobs for the convert tests.

usage: convert_fixture.py DATA_FS BLOB_DIR [more | noblobs]

Commits, with Python ZODB, transactions with user, description and
extension metadata: nested mappings, two blobs (one replaced later, one
empty), an undo (whose records point back to older data) and a deleted
key, so a copy has every kind of record to carry. With `more`, appends one
transaction with a new blob to an existing file instead; with `noblobs`,
writes the same history without the blobs (BLOB_DIR unused).
"""

import sys

import transaction
import ZODB
from persistent.mapping import PersistentMapping
from ZODB.blob import Blob
from ZODB.FileStorage import FileStorage


def commit(note, user, **extension):
    t = transaction.get()
    t.note(note)
    t.setUser(user)
    for key, value in extension.items():
        t.setExtendedInfo(key, value)
    t.commit()


def more(path, blob_dir):
    db = ZODB.DB(FileStorage(path, blob_dir=blob_dir))
    conn = db.open()
    conn.root()['later'] = Blob(b'a later blob')
    commit(u'later', u'dan')
    conn.close()
    db.close()


def main(path, blob_dir, blobs=True):
    db = ZODB.DB(FileStorage(path, blob_dir=blob_dir if blobs else None))
    conn = db.open()
    root = conn.root()
    root['settings'] = PersistentMapping({'x': 1, 'name': u'caf\xe9'})
    commit(u'initial settings', u'ann', source='fixture', count=1)
    if blobs:
        root['blob'] = Blob(b'first blob contents\n' * 1000)
        root['empty'] = Blob(b'')
    else:
        root['blob'] = PersistentMapping({'contents': b'first' * 1000})
        root['empty'] = PersistentMapping()
    commit(u'two blobs', u'bob')
    if blobs:
        with root['blob'].open('w') as f:
            f.write(b'replaced contents' * 3)
    else:
        root['blob']['contents'] = b'replaced contents' * 3
    commit(u'replace a blob', u'ann')
    root['settings']['x'] = 2
    commit(u'x becomes 2', u'carol', ticket=42)
    undo_id = db.undoLog(0, 1)[0]['id']
    db.undo(undo_id)
    commit(u'undo x', u'carol')
    del root['empty']
    commit(u'', u'')
    conn.close()
    db.close()


if __name__ == '__main__':
    if sys.argv[3:] == ['more']:
        more(sys.argv[1], sys.argv[2])
    elif sys.argv[3:] == ['noblobs']:
        main(sys.argv[1], sys.argv[2], blobs=False)
    else:
        main(sys.argv[1], sys.argv[2])
