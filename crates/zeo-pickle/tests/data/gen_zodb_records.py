# Writes zodb_records.txt: records of a root, a PersistentList, a small and
# a large OOBTree as Python ZODB stores them (hex, one per line).
# Run with a Python that has ZODB: python gen_zodb_records.py > zodb_records.txt
import ZODB, ZODB.MappingStorage, transaction
from persistent.mapping import PersistentMapping
from persistent.list import PersistentList
from BTrees.OOBTree import OOBTree
st = ZODB.MappingStorage.MappingStorage()
db = ZODB.DB(st)
c = db.open()
r = c.root()
r['name'] = 'demo'
r['list'] = PersistentList([1, 'two'])
small = OOBTree(); small['a'] = 1; small['b'] = 2
r['small'] = small
transaction.commit()
big = OOBTree()
for i in range(200): big['k%03d' % i] = i
r['big'] = big
transaction.commit()
def rec(o): return st.load(o._p_oid)[0].hex()
print('root', st.load(b'\0'*8)[0].hex())
print('list', rec(r['list']))
print('small', rec(r['small']))
print('big', r['big']._p_oid.hex(), rec(r['big']))
b = r['big']._firstbucket
while b is not None:
    print('bucket', b._p_oid.hex(), rec(b)); b = b._next
