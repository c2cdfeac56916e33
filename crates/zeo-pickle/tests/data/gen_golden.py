"""Regenerates tests/data/golden.rs: pickles made by real Python/ZODB.

Run with the project's Python 3 venv (ZODB 6 + zodbpickle):

    target/python/zeo6/bin/python crates/zeo-pickle/tests/data/gen_golden.py

The tests only read the generated file; they never need Python.

    ... gen_golden.py --verify tests/data/python_verified_records.txt

checks that Python loads the records our encoder wrote (third column,
`encode_record` of the decoded original in the second column) to the same
class and state as the originals; `python_golden.rs` asserts the encoder
still writes exactly those bytes.
"""
import io
import os
import pickle
import sys
import tempfile

import zodbpickle.pickle as zp
from ZODB._compat import PersistentPickler

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'golden.rs')


def rs_str(s):
    out = []
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == '\\':
            out.append('\\\\')
        elif 0x20 <= o < 0x7f:
            out.append(ch)
        else:
            out.append('\\u{%x}' % o)
    return '"' + ''.join(out) + '"'


def rs_bytes(b):
    return 'h("%s")' % bytes(b).hex()


def rs(o):
    """Rust expression building the Value that `o` decodes to."""
    if o is None:
        return 'Value::None'
    if o is True or o is False:
        return 'Value::Bool(%s)' % ('true' if o else 'false')
    if isinstance(o, int):
        if -2**63 <= o < 2**63:
            return 'Value::Int(%d)' % o if o != -2**63 else 'Value::Int(i64::MIN)'
        return 'Value::BigInt(%s)' % rs_bytes(pickle.encode_long(o))
    if isinstance(o, float):
        import struct
        return 'Value::Float(f64::from_bits(0x%016x))' % struct.unpack('>Q', struct.pack('>d', o))[0]
    if isinstance(o, bytearray):
        return 'Value::ByteArray(%s)' % rs_bytes(o)
    if isinstance(o, bytes):
        return 'Value::Bytes(%s)' % rs_bytes(o)
    if isinstance(o, str):
        return 'Value::Str(%s.into())' % rs_str(o)
    if isinstance(o, tuple):
        return 'Value::Tuple(vec![%s])' % ', '.join(map(rs, o))
    if isinstance(o, list):
        return 'Value::List(vec![%s])' % ', '.join(map(rs, o))
    if isinstance(o, dict):
        return 'Value::Dict(vec![%s])' % ', '.join('(%s, %s)' % (rs(k), rs(v)) for k, v in o.items())
    if isinstance(o, frozenset):
        return 'Value::FrozenSet(vec![%s])' % ', '.join(map(rs, o))
    if isinstance(o, set):
        return 'Value::Set(vec![%s])' % ', '.join(map(rs, o))
    raise TypeError(type(o))


def fast_dumps(o, proto):
    f = io.BytesIO()
    p = zp.Pickler(f, proto)
    p.fast = True
    p.dump(o)
    return f.getvalue()


VALUES = [
    ('none', None),
    ('true', True),
    ('false', False),
    ('zero', 0),
    ('int_255', 255),
    ('int_256', 256),
    ('int_65535', 65535),
    ('int_65536', 65536),
    ('int_minus1', -1),
    ('int_i32_max', 2**31 - 1),
    ('int_i32_max_plus1', 2**31),
    ('int_i32_min', -2**31),
    ('int_i32_min_minus1', -2**31 - 1),
    ('int_i64_max', 2**63 - 1),
    ('int_i64_min', -2**63),
    ('big_2_63', 2**63),
    ('big_neg', -2**63 - 1),
    ('big_2_70', 2**70),
    ('big_huge', 7**400),
    ('big_huge_neg', -(7**400)),
    ('float', 1.5),
    ('float_neg_tiny', -2.5e-300),
    ('float_inf', float('inf')),
    ('bytes_empty', b''),
    ('bytes_short', b'ab\xff\x00'),
    ('bytes_255', bytes(range(255))),
    ('bytes_256', bytes(range(256))),
    ('bytes_long', bytes(range(200)) * 3),
    ('bytearray', bytearray(b'a\x80z')),
    ('bytearray_empty', bytearray()),
    ('str_empty', ''),
    ('str_ascii', 'lastTransaction'),
    ('str_unicode', 'h\u00e9llo \u20ac \U0001f600'),
    ('str_specials', 'back\\slash\nnew line'),
    ('str_long', 'x' * 300),
    ('tuple0', ()),
    ('tuple1', (1,)),
    ('tuple2', (1, 'a')),
    ('tuple3', (1, 2, 3)),
    ('tuple4', (1, 2, 3, 4)),
    ('list0', []),
    ('list1', [1]),
    ('list2', [1, 2]),
    ('list1001', list(range(1001))),
    ('dict0', {}),
    ('dict1', {'k': 'v'}),
    ('dict3', {'a': 1, 'b': b'x', 'c': None}),
    ('dict1001', {i: None for i in range(1001)}),
    ('set0', set()),
    ('set', {1, 2, 3}),
    ('frozenset', frozenset([4, 5])),
    ('nested', {'msg': (1, False, 'tpc_begin', (140000000000, b'user', b'desc', {}, None, ' ')),
                'l': [[], [()], {'x': [1.25, -7]}]}),
]

# Long values spelled in Rust rather than element by element.
RUST_VALUE = {
    'list1001': 'Value::List((0..1001).map(Value::Int).collect())',
    'dict1001': 'Value::Dict((0..1001).map(|i| (Value::Int(i), Value::None)).collect())',
}

# Python 2 era pickles (hand-written bytes as cPickle wrote them), read the
# way ZODB does: byte strings stay bytes.
PY2 = [
    ('py2_string', b"S'ab\\x00\\n\\'c'\np0\n."),
    ('py2_binstring', b'\x80\x02T\x03\x00\x00\x00abcq\x00.'),
    ('py2_short_binstring', b'\x80\x02U\x03abcq\x00.'),
    ('py2_unicode', b'V\\u00e9t\\u00e9\np0\n.'),
    ('py2_int_bool', b'(I01\nI00\nI-12\nL99999999999999999999L\nF2.5\ntp0\n.'),
    ('py2_dict', b'(dp0\nS\'k\'\np1\n(lp2\nI1\naI2\nasS\'t\'\np3\n(I1\nI2\ntp4\ns.'),
    ('py2_memo_text', b'(lp0\nS\'x\'\np1\nag1\na.'),
    ('py2_proto1', b']q\x00(K\x01K\x02U\x01aq\x01h\x01e.'),
]


def main():
    lines = []
    w = lines.append
    w('// Generated by gen_golden.py from Python %s with zodbpickle; do not edit.' % sys.version.split()[0])
    w('')
    # 1. Values: CPython pickles at protocols 0-5; fast-mode and memo-mode
    #    protocol 2/3 pickles our encoder must reproduce byte for byte.
    w('pub fn values() -> Vec<Case> {')
    w('    vec![')
    for name, o in VALUES:
        w('        Case {')
        w('            name: %s,' % rs_str(name))
        w('            value: %s,' % RUST_VALUE.get(name, rs(o)))
        w('            by_protocol: vec![%s],' % ', '.join(
            '"%s"' % pickle.dumps(o, p).hex() for p in range(6)))
        w('            fast2: "%s",' % fast_dumps(o, 2).hex())
        w('            fast3: "%s",' % fast_dumps(o, 3).hex())
        w('            memo3: "%s",' % zp.dumps(o, 3).hex())
        w('        },')
    w('    ]')
    w('}')
    w('')
    w('pub fn py2() -> Vec<(&\'static str, Vec<u8>, Value)> {')
    w('    vec![')
    for name, data in PY2:
        o = zp.loads(data, encoding='bytes')
        w('        (%s, %s, %s),' % (rs_str(name), rs_bytes(data), rs(o)))
    w('    ]')
    w('}')
    w('')
    records(w)
    with open(OUT, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def records(w):
    import transaction
    import ZODB
    from BTrees.OOBTree import OOBTree
    from persistent.mapping import PersistentMapping
    from persistent.list import PersistentList
    from persistent.wref import WeakRef
    from ZODB.FileStorage import FileStorage
    from ZODB.serialize import referencesf
    from ZODB.utils import get_pickle_metadata, p64, u64

    d = tempfile.mkdtemp()
    st = FileStorage(os.path.join(d, 'Data.fs'))
    db = ZODB.DB(st)
    conn = db.open()
    root = conn.root()
    kids = [PersistentMapping({'n': i}) for i in range(3)]
    pm = PersistentMapping({'kid%d' % i: k for i, k in enumerate(kids)})
    pm['list'] = PersistentList([kids[0], 'plain'])
    pm['weak'] = WeakRef(kids[1])
    root['pm'] = pm
    tree = OOBTree()
    for i in range(100):
        tree['key%03d' % i] = kids[i % 3]
    root['tree'] = tree
    transaction.commit()
    cases = [('root', root), ('pm', pm), ('list', pm['list']), ('tree', tree)]
    bucket = tree._firstbucket
    cases.append(('bucket', bucket))
    w('pub fn records() -> Vec<Record> {')
    w('    vec![')
    for name, obj in cases:
        data, _ = st.load(obj._p_oid)
        refs = referencesf(data)
        w('        Record {')
        w('            name: %s,' % rs_str(name))
        w('            oid: %d,' % u64(obj._p_oid))
        w('            data: %s,' % rs_bytes(data))
        w('            refs: vec![%s],' % ', '.join(str(u64(r)) for r in refs))
        w('            class: (%s, %s),' % tuple(rs_str(x) for x in get_pickle_metadata(data)))
        w('        },')
    w('    ]')
    w('}')
    w('')
    # The 1 KB-ish record the bench uses: a bucket record.
    data, _ = st.load(bucket._p_oid)
    w('pub const BUCKET_LEN: usize = %d;' % len(data))
    bench = os.path.join(os.path.dirname(OUT), '..', '..', 'benches', 'bucket_record.hex')
    with open(bench, 'w') as f:
        f.write(data.hex() + '\n')
    db.close()

    # Every persistent-id shape, written by one pickler sharing its memo
    # like ObjectWriter: class pickle then state pickle.
    class K:
        pass
    K.__module__ = 'mod'
    K.__qualname__ = K.__name__ = 'K'
    sys.modules['mod'] = type(sys)('mod')
    sys.modules['mod'].K = K

    class Ref:
        def __init__(self, pid):
            self.pid = pid

    def pid(obj):
        return obj.pid if isinstance(obj, Ref) else None

    f = io.BytesIO()
    p = PersistentPickler(pid, f, 3)
    p.dump(K)
    p.dump({
        'ref': Ref((p64(5), K)),
        'bare': Ref(p64(6)),
        'weak': Ref(['w', (p64(7),)]),
        'weakdb': Ref(['w', (p64(8), 'other')]),
        'xdb_m': Ref(['m', ('other', p64(9), K)]),
        'xdb_n': Ref(['n', ('other', p64(10))]),
        'legacy_weak': Ref([p64(11)]),
        'ref2': Ref((p64(12), K)),
    })
    data = f.getvalue()
    w('pub const ALL_PID_SHAPES: &str = "%s";' % data.hex())
    w('pub fn all_pid_shapes_refs() -> Vec<u64> { vec![%s] }' % ', '.join(
        str(u64(r)) for r in referencesf(data)))

    # Python 2 era record: SHORT_BINSTRING oids, ((module, name), None) meta.
    py2 = (b'\x80\x02((U\x03modq\x01U\x01Kq\x02tq\x03Nt.'
           b'\x80\x02}q\x04(U\x01aq\x05(U\x08\x00\x00\x00\x00\x00\x00\x00\x07h\x03tQU\x01bq\x06'
           b'U\x08\x00\x00\x00\x00\x00\x00\x00\x08Qu.')
    w('pub const PY2_RECORD: &str = "%s";' % py2.hex())
    w('pub fn py2_record_refs() -> Vec<u64> { vec![%s] }' % ', '.join(
        str(u64(r)) for r in referencesf(py2)))
    w('pub const PY2_RECORD_CLASS: (&str, &str) = (%s, %s);' % tuple(
        rs_str(x) for x in get_pickle_metadata(py2)))


def verify(path):
    from ZODB._compat import PersistentUnpickler
    from ZODB.serialize import referencesf
    import BTrees.OOBTree  # noqa: F401 (classes the records name)
    import persistent.list  # noqa: F401
    import persistent.mapping  # noqa: F401

    def load(data):
        pids = []

        def persistent_load(pid):
            pids.append(pid)
            return ('PID', repr(pid))
        u = PersistentUnpickler(None, persistent_load, io.BytesIO(data))
        return repr(u.load()), repr(u.load()), pids

    ok = True
    for line in open(path):
        name, orig, ours = line.split()
        orig, ours = bytes.fromhex(orig), bytes.fromhex(ours)
        same = load(orig) == load(ours) and referencesf(orig) == referencesf(ours)
        print(name, 'ok' if same else 'DIFFERENT')
        ok = ok and same
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    if sys.argv[1:2] == ['--verify']:
        verify(sys.argv[2])
    else:
        main()
