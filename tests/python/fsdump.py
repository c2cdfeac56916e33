"""Print ZODB's fsdump of a Data.fs, the reference for our own dump.

usage: fsdump.py DATA_FS
"""

import sys

from ZODB.FileStorage.fsdump import fsdump


def main():
    if len(sys.argv) != 2:
        sys.stderr.write("usage: fsdump.py DATA_FS\n")
        sys.exit(2)
    fsdump(sys.argv[1])


if __name__ == "__main__":
    main()
