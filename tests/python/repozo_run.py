"""Run ZODB's repozo with the time that names its files fixed.

usage: repozo_run.py STAMP REPOZO-ARGS...

STAMP is YYYY-MM-DD-HH-MM-SS (UTC), or "now". repozo names backup files
by the current second, so two backups a test takes in one second would
collide; repozo's own test hook (options.test_now) fixes the name
instead. Exits 0 on success, 1 with the error on stderr.
"""

import sys

from ZODB.scripts import repozo


def main(stamp, args):
    options = repozo.parseargs(args)
    if stamp != "now":
        options.test_now = tuple(int(x) for x in stamp.split("-"))
    try:
        if options.mode == repozo.BACKUP:
            repozo.do_backup(options)
        elif options.mode == repozo.RECOVER:
            repozo.do_recover(options)
        else:
            repozo.do_verify(options)
    except repozo.RepozoError as e:
        print(e, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
