"""Pack a Data.fs with Python ZODB, the reference for our own pack.

usage: pack.py DATA_FS PACK_TIME [--no-gc]

PACK_TIME is in Unix seconds. Garbage collection is on unless --no-gc.
"""

import sys

from ZODB.FileStorage import FileStorage
from ZODB.serialize import referencesf


def main():
    args = sys.argv[1:]
    gc = "--no-gc" not in args
    args = [a for a in args if a != "--no-gc"]
    if len(args) != 2:
        sys.stderr.write(__doc__)
        sys.exit(2)
    path, pack_time = args[0], float(args[1])
    storage = FileStorage(path)
    try:
        storage.pack(pack_time, referencesf, gc=gc)
    finally:
        storage.close()


if __name__ == "__main__":
    main()
