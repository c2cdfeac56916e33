"""Writes the golden messages of tests/golden.rs with ZEO's own marshaller.

Run once with each venv; both must print the same table:

    target/python/zeo6/bin/python crates/zeo-protocol/tests/golden/generate.py
    target/python/zeo5/bin/python crates/zeo-protocol/tests/golden/generate.py

The output is pasted into tests/golden_data.rs; the tests never run Python.
"""
import ZODB.POSException as P
from ZEO.asyncio.marshal import encoder, reduce_exception

z64 = b'\0' * 8
tid1 = bytes.fromhex('03d81e8a12345678')
tid2 = bytes.fromhex('03d81e8a12345679')
oid1 = b'\0' * 7 + b'\1'
data1k = bytes(range(256)) * 4
txn = 140326466128656

conflict = P.ConflictError(oid=oid1, serials=(tid2, tid1), data=b'\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.')
conflict_plain = P.ConflictError(oid=oid1, serials=(tid2, tid1))
read_conflict = P.ReadConflictError(oid=oid1, serials=(tid2, tid1))

cases = [
    ('register', (1, False, 'register', ('1', False))),
    ('register_int_flag', (1, False, 'register', ('1', 0))),
    ('lastTransaction', (1, False, 'lastTransaction', ())),
    ('reply_tid', (1, 0, '.reply', tid1)),
    ('heartbeat', (-1, 0, '.reply', None)),
    ('loadBefore', ((oid1, tid1), False, 'loadBefore', (oid1, tid1))),
    ('loadBefore_reply', ((oid1, tid1), 0, '.reply', (data1k, tid1, None))),
    ('loadBefore_reply_end', ((oid1, tid1), 0, '.reply', (b'x', tid1, tid2))),
    ('loadBefore_none', ((oid1, tid1), 0, '.reply', None)),
    ('tpc_begin', (0, True, 'tpc_begin', (txn, b'user', b'desc', {}, None, ' '))),
    ('tpc_begin_ext', (0, True, 'tpc_begin', (txn, b'', b'initial', {'k': 'v', 'n': 1}, tid1, 'p'))),
    ('storea', (0, True, 'storea', (oid1, z64, data1k, txn))),
    ('vote', (3, False, 'vote', (txn,))),
    ('vote_reply_empty', (3, 0, '.reply', [])),
    ('vote_reply_oids', (3, 0, '.reply', [oid1, z64])),
    ('vote_reply_conflicts', (3, 0, '.reply', [{'oid': oid1, 'serials': (tid2, tid1), 'data': b'd'}])),
    ('tpc_finish_reply', (4, 0, '.reply', tid2)),
    ('new_oids_reply', (5, 0, '.reply', [b'\0' * 7 + bytes([i]) for i in range(1, 4)])),
    ('getInvalidations_reply', (2, 0, '.reply', (tid2, [z64, oid1]))),
    ('invalidateTransaction', (0, True, 'invalidateTransaction', (tid2, [oid1]))),
    ('info', (0, True, 'info', ({'length': 1, 'size': 166},))),
    ('receiveBlobChunk', (0, True, 'receiveBlobChunk', (oid1, tid1, b'chunk'))),
    ('get_info_reply', (2, 0, '.reply', {
        'length': 0, 'size': 4, 'name': 'var/Data.fs', 'supportsUndo': True,
        'supports_record_iternext': True,
        'interfaces': (('ZODB.interfaces', 'IStorage'), ('zope.interface', 'Interface')),
    })),
    ('history_reply', (6, 0, '.reply', [
        {'k': 'v', 'time': 1700000000.25, 'user_name': b'u', 'description': b'd',
         'tid': tid1, 'size': 42},
    ])),
    ('iterator_next_reply', (7, 0, '.reply', (tid1, ' ', b'u', b'd', {}))),
    ('server_status_reply', (8, 0, '.reply', {
        'connections': 1, 'loads': 2, 'stores': 3, 'commits': 4, 'aborts': 5,
        'active_txns': 0, 'lock_time': None, 'conflicts': 0, 'conflicts_resolved': 0,
        'start': 'Wed Nov 25 11:21:31 2026', 'waiting': 0,
        'timeout-thread-is-alive': 'stub', 'last-transaction': '03d81e8a12345678',
    })),
    ('err_poskey', (2, 2, '.reply', reduce_exception(P.POSKeyError(z64)))),
    ('err_poskey_serial', (2, 2, '.reply', reduce_exception(P.POSKeyError(oid1, tid1)))),
    ('err_readonly', (1, 2, '.reply', reduce_exception(P.ReadOnlyError()))),
    ('err_conflict', (5, 2, '.reply', reduce_exception(conflict))),
    ('err_conflict_plain', (5, 2, '.reply', reduce_exception(conflict_plain))),
    ('err_read_conflict', (5, 2, '.reply', reduce_exception(read_conflict))),
    ('err_txn_mismatch', (3, 2, '.reply', reduce_exception(P.StorageTransactionError(None, 123)))),
    ('err_txn_message', (3, 2, '.reply', reduce_exception(P.StorageTransactionError('Already voting (locked)')))),
    ('err_undo', (3, 2, '.reply', reduce_exception(P.UndoError('non-undoable transaction')))),
    ('err_type', (9, 2, '.reply', reduce_exception(TypeError('bad args')))),
    ('err_value_unpicklable', (9, 2, '.reply', reduce_exception(ValueError("Couldn't pickle response")))),
    ('ints', (10, 0, '.reply', (0, -1, 127, 128, 255, 256, 65535, 65536, -32, -33, -128, -129,
                                2**31 - 1, -2**31, 2**31, 2**32, 2**63 - 1, -2**63, 2**64 - 1))),
    ('floats', (11, 0, '.reply', (1.5, -0.0, 1e300, 0.1))),
    ('strings', (12, 0, '.reply', ('', 'é€😀', 'x' * 40, 'y' * 300, b'', b'z' * 300))),
    ('lists', (14, 0, '.reply', ([1], [], list(range(1001)), [[], ()]))),
    ('dicts', (15, 0, '.reply', ({'a': 1}, {}, {'n': {'m': None}}, {1: b'x', b'k': True}))),
    ('bools', (16, 0, '.reply', (True, False, None))),
]

for name, msg in cases:
    for letter in 'ZM':
        # Servers encode with server=True (adds an exception default for
        # msgpack); for plain values both encoders agree.
        data = encoder(letter.encode() + b'5', server=True)(*msg)
        print(f'    ("{name}", \'{letter}\', "{data.hex()}"),')
