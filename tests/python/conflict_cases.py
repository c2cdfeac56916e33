"""Generate conflict-resolution cases with the real BTrees package.

Usage: conflict_cases.py SEED CASES_PER_KIND [KIND ...]

KIND is one of bucket, set, btree, treeset, length (all by default). For
each case this builds a random old state, two concurrent changes of it (the
committed and the new state), pickles the three records the way ZODB's
ObjectWriter does (protocol 3, class pickle then state, persistent objects
as (oid, class) references), and asks ZODB's own tryToResolveConflict for
the result. It prints one tab-separated line per case:

    module  name  old_hex  committed_hex  new_hex  outcome

where outcome is `ok:<hex of the resolved record>`, `btrees:p1,p2,p3,reason`
(a BTreesConflictError) or `error:<exception class>` (any other failure).
"""

import io
import logging
import os
import random
import sys
import traceback

import persistent
from persistent.mapping import PersistentMapping

import BTrees
from BTrees.Length import Length
from ZODB import ConflictResolution
from ZODB._compat import PersistentPickler
from ZODB.POSException import BTreesConflictError
from ZODB.POSException import ConflictError

# ZODB's test modules import zope.testing, which the venvs leave out; the
# ZEO suite runner's stand-in serves here too.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "zeo_suite"))
import zope_testing_shim  # noqa: E402
zope_testing_shim.install()
from ZODB.tests.ConflictResolution import PCounter  # noqa: E402

FAMILIES = ["OO", "OI", "OL", "OU", "OQ", "IO", "II", "IF", "IU", "LO",
            "LL", "LF", "LQ", "UO", "UI", "UF", "UU", "QO", "QL", "QF", "QQ"]
RANGES = {
    "I": (-2**31, 2**31 - 1),
    "L": (-2**63, 2**63 - 1),
    "U": (0, 2**32 - 1),
    "Q": (0, 2**64 - 1),
}


def module_of(family):
    return __import__("BTrees.%sBTree" % family, fromlist=["x"])


class Records:
    """Pickles states as ZODB's ObjectWriter does."""

    def __init__(self):
        self.next_oid = 100

    def oid(self):
        self.next_oid += 1
        return self.next_oid.to_bytes(8, "big")

    @staticmethod
    def persistent_id(obj):
        if isinstance(obj, persistent.Persistent) and obj._p_oid is not None:
            return obj._p_oid, type(obj)
        return None

    def record(self, klass, state):
        f = io.BytesIO()
        p = PersistentPickler(self.persistent_id, f, 3)
        p.dump(klass)
        p.dump(state)
        return f.getvalue()


class Storage:
    """What tryToResolveConflict needs of a storage."""

    _crs_transform_record_data = _crs_untransform_record_data = (
        lambda self, o: o)

    def __init__(self, old, committed):
        self.data = {b"old": old, b"com": committed}

    def loadSerial(self, oid, serial):
        return self.data[serial]


def outcome(klass, old, committed, new):
    storage = Storage(old, committed)
    try:
        merged = ConflictResolution.tryToResolveConflict(
            storage, b"\0" * 8, b"com", b"old", new)
        return "ok:" + merged.hex()
    except ConflictError:
        pass
    # Ask the class directly for the reason ZODB logged and dropped.
    factory = ConflictResolution.PersistentReferenceFactory()
    try:
        unpickler = ConflictResolution.PersistentUnpickler(
            ConflictResolution.find_global, factory.persistent_load,
            io.BytesIO(new))
        unpickler.load()
        s_new = unpickler.load()
        s_old = ConflictResolution.state(storage, None, None, factory, old)
        s_com = ConflictResolution.state(storage, None, None, factory, committed)
        klass.__new__(klass)._p_resolveConflict(s_old, s_com, s_new)
    except BTreesConflictError as e:
        return "btrees:%d,%d,%d,%d" % tuple(e.args)
    except Exception as e:
        return "error:" + type(e).__name__
    return "error:unpicklable"


class Gen:
    def __init__(self, rnd, records):
        self.rnd = rnd
        self.records = records
        self.shared = [PersistentMapping() for _ in range(3)]
        for obj in self.shared:
            obj._p_oid = records.oid()

    def text(self):
        r = self.rnd
        pick = r.random()
        if pick < 0.15:
            return r.choice(["", "a", "b", "\xe9", "z"])
        if pick < 0.2:
            return r.choice(["\u20ac", "\u00e9t\u00e9", "na\u00efve"])
        return "k%03d" % r.randrange(60)

    def object_key_maker(self):
        r = self.rnd
        kind = r.choice(["str", "str", "int", "tuple", "bytes", "float"])
        if kind == "str":
            return self.text
        if kind == "int":
            return lambda: r.choice([r.randrange(-50, 50),
                                     r.randrange(2**70) - 2**69])
        if kind == "float":
            return lambda: r.choice([r.randrange(40) / 4, float(r.randrange(9))])
        if kind == "bytes":
            return lambda: r.choice([b"", b"x", bytes([r.randrange(256)]),
                                     b"key%02d" % r.randrange(40)])
        return lambda: (self.text(), r.randrange(4))

    def int_maker(self, letter):
        r = self.rnd
        lo, hi = RANGES[letter]

        def make():
            if r.random() < 0.1:
                return r.choice([lo, hi, lo + 1, hi - 1])
            return r.randrange(max(lo, -40), min(hi, 40) + 1)
        return make

    def value_maker(self, letter, keys):
        r = self.rnd
        if letter in RANGES:
            return self.int_maker(letter)
        if letter == "F":
            return lambda: r.choice([r.randrange(16) / 8, r.randrange(5),
                                     float(r.randrange(-3, 3)), 0.1])

        # Most cases keep to one kind of value, as applications do; the
        # rest mix kinds, which Python cannot always compare.
        bound = r.choice([None, None, 0.2, 0.4, 0.5, 0.58])
        shared_list = [self.text()]

        def obj():
            pick = r.random() if bound is None else bound - 0.01
            if pick < 0.2:
                return r.choice(self.shared)
            if pick < 0.3 and keys:
                return r.choice(keys)  # the same object as a key
            if pick < 0.4:
                return (self.text(), r.randrange(3), None)
            if pick < 0.5:
                return r.choice([None, True, 2**65, -1.5, b"v"])
            if pick < 0.58:
                return r.choice([[], [self.text(), r.randrange(3)],
                                 [(self.text(),), [1]], shared_list])
            return r.choice(["v%d" % r.randrange(5), r.randrange(5), "x"])
        return obj


def mutate(rnd, items, keyf, valf, mapping, ops):
    items = dict(items)
    for _ in range(ops):
        pick = rnd.random()
        if pick < 0.45 or not items:
            items[keyf()] = valf() if mapping else None
        elif pick < 0.75:
            del items[rnd.choice(sorted(items))]
        elif mapping:
            items[rnd.choice(sorted(items))] = valf()
    return items


def make_case(rnd, records, kind):
    gen = Gen(rnd, records)
    if kind == "length":
        base = rnd.choice([rnd.randrange(1000), 2**64 + rnd.randrange(9),
                           -rnd.randrange(100)])
        old = base
        com = base + rnd.randrange(-5, 6)
        new = base + rnd.randrange(-5, 6)
        return (Length, [records.record(Length, s) for s in (old, com, new)])
    if kind == "counter":
        base = rnd.choice([rnd.randrange(1000), 2**64 + rnd.randrange(9),
                           -rnd.randrange(100)])
        values = [base, base + rnd.randrange(-5, 6), base + rnd.randrange(-5, 6)]
        # The class as ObjectWriter spells it, or as ZODB's test helper
        # zodb_pickle does: ((module, name), None).
        meta = rnd.choice([PCounter, ((PCounter.__module__, "PCounter"), None)])
        label = rnd.choice([None, "before", "after"])
        states = []
        for i, v in enumerate(values):
            state = {}
            if label == "before":
                state["label"] = "counter %d" % i
            # Now and then an old state without _value: Python's KeyError.
            if i > 0 or rnd.random() < 0.95:
                state["_value"] = v
            if label == "after":
                state["note"] = [i, "n"]
            states.append(state)
        return (PCounter, [records.record(meta, s) for s in states])
    family = rnd.choice(FAMILIES)
    module = module_of(family)
    flavour = {"bucket": "Bucket", "set": "Set", "btree": "BTree",
               "treeset": "TreeSet"}[kind]
    klass = getattr(module, family + flavour)
    mapping = kind in ("bucket", "btree")
    keyf = (gen.object_key_maker() if family[0] == "O"
            else gen.int_maker(family[0]))
    pool = []

    def key():
        k = keyf()
        pool.append(k)
        return k
    valf = gen.value_maker(family[1], pool) if mapping else None
    size = rnd.choice([0, 1, 2, 3, 5, 8, 12, 40, 150])
    old = mutate(rnd, {}, key, valf, mapping, size)
    com = mutate(rnd, old, key, valf, mapping, rnd.randrange(4))
    new = mutate(rnd, old, key, valf, mapping, rnd.randrange(4))
    nexts = None
    if kind in ("bucket", "set") and rnd.random() < 0.5:
        nb = getattr(module, family + flavour)()
        nb._p_oid = records.oid()
        other = getattr(module, family + flavour)()
        other._p_oid = records.oid()
        nexts = [nb, nb if rnd.random() < 0.9 else other,
                 nb if rnd.random() < 0.9 else other]
    states = []
    for i, items in enumerate((old, com, new)):
        obj = klass()
        if mapping:
            obj.update(items)
        else:
            obj.update(items.keys())
        state = obj.__getstate__() if len(obj) or rnd.random() < 0.7 else None
        if nexts is not None and state is not None:
            state = (state[0], nexts[i])
        states.append(state)
    return klass, [records.record(klass, s) for s in states]


def main():
    seed = int(sys.argv[1])
    count = int(sys.argv[2])
    kinds = sys.argv[3:] or ["bucket", "set", "btree", "treeset", "length",
                             "counter"]
    rnd = random.Random(seed)
    # ZODB logs every failed resolution; the outcome column says it.
    logging.getLogger("ZODB.ConflictResolution").disabled = True
    records = Records()
    out = sys.stdout
    for kind in kinds:
        for _ in range(count):
            try:
                klass, (old, com, new) = make_case(rnd, records, kind)
            except TypeError:
                # Keys Python cannot order (mixed kinds): not a state
                # BTrees can hold.
                continue
            result = outcome(klass, old, com, new)
            out.write("%s\t%s\t%s\t%s\t%s\t%s\n" % (
                klass.__module__, klass.__name__, old.hex(), com.hex(),
                new.hex(), result))
    out.flush()


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        sys.exit(1)
