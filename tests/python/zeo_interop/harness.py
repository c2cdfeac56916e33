"""Shared helpers of the ZEO interop scripts: connecting real ZEO clients to
the server under test, bounded waiting, and reporting.

Every script prints one JSON object on its last stdout line when all its
checks hold, or exits non-zero with the failed check on stderr.
"""

import io
import json
import os
import pickle
import sys
import time

import transaction
import ZEO.ClientStorage
import ZODB

SCRIPT = os.path.basename(sys.argv[0])


def fail(message):
    sys.stderr.write("%s: %s\n" % (SCRIPT, message))
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def client(port, **options):
    """A ClientStorage on 127.0.0.1:port; connecting waits 20 s at most."""
    options.setdefault("wait_timeout", 20)
    return ZEO.ClientStorage.ClientStorage(("127.0.0.1", port), **options)


def open_db(port, **options):
    """(db, connection, transaction manager) over a fresh client."""
    db = ZODB.DB(client(port, **options))
    tm = transaction.TransactionManager()
    return db, db.open(tm), tm


def protocol(storage):
    """The negotiated protocol, e.g. "Z5" (pickle) or "M5" (msgpack)."""
    return storage.protocol_version.decode("ascii")


def wait_for(predicate, what, timeout=15.0):
    """Polls predicate() until true; fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            fail("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(0.02)


def sees(tm, read):
    """A predicate for wait_for: begins a new transaction (processing the
    invalidations received so far) and evaluates read(); a missing key
    counts as not yet seen."""

    def predicate():
        tm.begin()
        try:
            return read()
        except KeyError:
            return False

    return predicate


def state(record):
    """The state pickle of a ZODB data record (class pickle, then state),
    with persistent references left as they are."""
    unpickler = pickle.Unpickler(io.BytesIO(record))
    unpickler.persistent_load = lambda reference: reference
    unpickler.load()
    return unpickler.load()


def text(value):
    """Transaction metadata as str: ZODB gives bytes, ZEO over msgpack may
    too."""
    return value.decode("utf-8") if isinstance(value, bytes) else value


def emit(report):
    print(json.dumps(report, sort_keys=True))
