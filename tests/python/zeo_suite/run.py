"""Runs ZEO's own test suite against the zeo-server binary.

ZEO's tests start every server through ``ZEO._forker.start_zeo_server``
(re-exported as ``ZEO.tests.forker.start_zeo_server``; ``ZEO.server`` calls
it too). This script replaces that function with one that writes the same
ZConfig text to a file, starts ``zeo-server -C FILE`` on 127.0.0.1 and
returns what the original returns: the bound address and a stop function.
It then runs a selection of ZEO's test classes with ``unittest``.

Usage::

    python run.py --server PATH/zeo-server [--full] [--list] [-v]
                  [--postgres SOCKET_DIR] [NAME ...]

With ``--postgres``, every storage section ZEO's tests write (a
``<filestorage>``, ``<mappingstorage>`` or ``<blobstorage>``) is replaced
by a ``<relstorage>`` on a fresh database of the PostgreSQL cluster whose
Unix socket is in ``SOCKET_DIR`` (a restart of the same storage path
within a test finds the same database), and the default selection is the
generic test classes that assume no Data.fs (``POSTGRES_SELECTION``);
``skips_postgres.txt`` lists what does not apply there.

``NAME`` selects classes or single tests by their id without the
``ZEO.tests.`` prefix (``testZEO.MappingStorageTests``,
``testZEO.FileStorageTests.checkPackAllRevisions``) and may use ``*``.
Without names the CI selection runs, or the full one with ``--full`` or
``ZEO_SUITE_FULL=1``. Tests listed in ``skips.txt`` next to this file are
reported as skipped with their reason.

The last line printed is ``ZEO_SUITE_SUMMARY {json}``; the exit status is 0
only when no selected, non-skipped test failed or errored.
"""

import argparse
import atexit
import faulthandler
import fnmatch
import importlib
import importlib.metadata
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import zope_testing_shim  # noqa: E402

# The blob doctests testZEO.test_suite() builds (ZODB's
# storage_reusable_suite with non-shared and shared client blob
# directories, zeo_blob_cache.test, IExternalGC with blobs), selected under
# this name; see blob_doctests().
BLOB_DOCTESTS = 'blob_doctests'

# Classes run by default (the CI selection). Keep this within about a
# minute per ZEO version on two busy cores; longer classes go in FULL_ONLY,
# long single tests in FULL_ONLY_TESTS.
CI_SELECTION = [
    'testZEO.Test_convenience_functions',
    'testZEO.FileStorageTests',
    'testZEO.MappingStorageTests',
    'testZEO.ClientConflictResolutionTests',
    'testZEO.FileStorageRecoveryTests',
    'testZEO.ZRPCConnectionTests',
    'testZEO.MultiprocessingTests',
    'testConnection.MappingStorageConnectionTests',
    'testConnection.FileStorageInvqTests',
    'testConnection.FileStorageTimeoutTests',
    'test_client_side_conflict_resolution.ClientSideConflictResolutionTests',
    'testConversionSupport',
    'testZEO.FileStorageSSLTests',
    'testConnection.SSLConnectionTests',
    'testssl.SSLConfigTest',
    'testZEO.BlobAdaptedFileStorageTests',
    'testZEO.BlobWritableCacheTests',
    BLOB_DOCTESTS,
]

FULL_ONLY = [
    'testConnection.FileStorageConnectionTests',
    'testConnection.FileStorageReconnectionTests',
    'testConnection.MappingStorageTimeoutTests',
]

# Tests of CI classes that take over ten seconds each; skipped (with this
# reason) unless the full selection runs.
FULL_ONLY_TESTS = [
    'testZEO.*.*_race_external_invalidate_vs_disconnect',
]
FULL_ONLY_REASON = 'long-running; runs with ZEO_SUITE_FULL=1'

# Classes of the same modules that are not run at all, with the reason
# (`--list` prints them); skips.txt carries the per-test reasons inside
# selected classes.
EXCLUDED = {
    'testZEO.FileStorageHexTests':
        'server-side <hexstorage> wrapper (a Python storage) is not available',
    'testZEO.FileStorageClientHexTests':
        'server-side <serverhexstorage> wrapper (a Python storage) is not '
        'available',
    'testZEO.FileStorageLoadDelayedTests':
        'server-side <loaddelayed_storage> wrapper (a Python storage) is not '
        'available',
    'testZEO.DemoStorageTests': '<demostorage> is not served by zeo-server',
}

# Classes run by default against PostgreSQL (--postgres): FileStorageTests
# composes the generic mixins MappingStorageTests runs (basic,
# synchronization, MT, read-only, ...) with the further ones (undo,
# iteration, revisions, conflict resolution), which assume a storage, not
# a Data.fs; running MappingStorageTests as well would run the generic
# mixins twice. Of the blob classes (a <relstorage> with a shared
# blob-dir; BlobWritableCacheTests' clients share it too) only their own
# blob tests run, the rest being those same generic mixins again; the blob
# doctests run whole (about a minute).
POSTGRES_SELECTION = [
    'testZEO.FileStorageTests',
    BLOB_DOCTESTS,
] + ['testZEO.%s.%s' % (cls, test)
     for cls in ('BlobAdaptedFileStorageTests', 'BlobWritableCacheTests')
     for test in ('check*Blob*', 'checkTemporaryDirectory',
                  'checkTransactionBufferCleanup')]

DEFAULT_TEST_TIMEOUT = 120


# --- the server ----------------------------------------------------------------

class ServerLauncher:
    """Starts zeo-server processes in place of ZEO's forked Python server."""

    def __init__(self, binary, log_dir, postgres=None):
        self.binary = binary
        self.log_dir = log_dir
        self.postgres = Databases(postgres) if postgres else None
        self.count = 0
        self.live = []
        # Server log files started by the current test (for failure reports).
        self.current_logs = []
        atexit.register(self.kill_all)

    def kill_all(self):
        for proc in self.live:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.live = []
        if self.postgres:
            self.postgres.drop_all()

    def start_zeo_server(self, storage_conf=None, zeo_conf=None, port=None,
                         keep=False, path='Data.fs', protocol=None,
                         blob_dir=None, suicide=True, debug=False,
                         threaded=False, start_timeout=33, name=None,
                         log=None, show_config=False):
        """Same arguments and result as ZEO's ``start_zeo_server``."""
        from ZEO._forker import ZEOConfig

        if protocol is not None:
            raise NotImplementedError(
                'zeo-server cannot be made to offer protocol %r' % protocol)
        if not storage_conf:
            storage_conf = '<filestorage>\npath %s\n</filestorage>' % path
        database = None
        if self.postgres:
            storage_conf, database = self.postgres.storage_section(
                storage_conf, blob_dir, path)
        elif blob_dir:
            storage_conf = ('<blobstorage>\nblob-dir %s\n%s\n</blobstorage>'
                            % (blob_dir, storage_conf))
        if zeo_conf is None or isinstance(zeo_conf, dict):
            if port is None:
                port = 0
            addr = ('127.0.0.1', port) if isinstance(port, int) else port
            config = ZEOConfig(addr, log=log)
            if zeo_conf:
                config.__dict__.update(zeo_conf)
            zeo_conf = config
        text = str(zeo_conf) + '\n\n' + storage_conf
        if show_config:
            print(text)

        fd, conf_path = tempfile.mkstemp(
            '.conf', prefix='ZEO_forker', dir=os.getcwd())
        with os.fdopen(fd, 'w') as f:
            f.write(text)

        self.count += 1
        log_path = os.path.join(self.log_dir, 'server-%d.log' % self.count)
        with open(log_path, 'wb') as log_file:
            log_file.write(('--- config\n%s\n--- cwd %s\n'
                            % (text, os.getcwd())).encode())
            log_file.flush()
            proc = subprocess.Popen(
                [self.binary, '-C', conf_path],
                cwd=os.getcwd(), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=log_file,
                preexec_fn=_die_with_parent(), close_fds=True)
        self.live.append(proc)
        self.current_logs.append(log_path)
        try:
            address = _read_address(proc, start_timeout)
        except Exception:
            proc.kill()
            proc.wait()
            raise RuntimeError('zeo-server did not start; see %s:\n%s'
                               % (log_path, _tail(log_path)))
        finally:
            os.remove(conf_path)
        # Keep draining stdout so that the server never blocks on it.
        threading.Thread(target=_drain, args=(proc.stdout,),
                         daemon=True).start()

        storage_files = _filestorage_paths(storage_conf)
        workdir = os.getcwd()
        stopped = []

        def stop(stop_timeout=99):
            if stopped:
                return
            stopped.append(True)
            _terminate(proc, min(stop_timeout, 30), log_path, workdir)
            if proc in self.live:
                self.live.remove(proc)
            if not keep:
                _remove_storage_files(workdir, storage_files)
                if database:
                    self.postgres.drop(database)

        return address, stop

    def install(self):
        import ZEO._forker
        ZEO._forker.start_zeo_server = self.start_zeo_server
        import ZEO.tests.forker
        ZEO.tests.forker.start_zeo_server = self.start_zeo_server


_STORAGE_START = re.compile(
    r'^\s*<(filestorage|mappingstorage|blobstorage)(?:\s+([^\s/>]+))?',
    re.IGNORECASE | re.MULTILINE)
_PACK_GC_OFF = re.compile(r'^\s*pack-gc\s+false\s*$',
                          re.IGNORECASE | re.MULTILINE)
_BLOB_DIR = re.compile(r'^\s*blob-dir\s+(\S.*?)\s*$',
                       re.IGNORECASE | re.MULTILINE)


class Databases:
    """Fresh PostgreSQL databases for the storages ZEO's tests configure."""

    def __init__(self, socket_dir):
        self.socket_dir = socket_dir
        self.count = 0
        self.live = set()
        # (working directory, storage path) -> database, so that a test
        # restarting a server on the same path finds its data again.
        self.by_path = {}

    def psql(self, sql):
        subprocess.run(
            ['psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1',
             '-h', self.socket_dir, '-U', 'postgres', '-d', 'postgres',
             '-c', sql],
            check=True, timeout=60, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL)

    def storage_section(self, storage_conf, blob_dir, path):
        """The ``<relstorage>`` standing for ``storage_conf``, and its
        database."""
        found = _STORAGE_START.search(storage_conf)
        if not found:
            raise NotImplementedError(
                'no PostgreSQL stand-in for the storage section %r'
                % storage_conf)
        kind = found.group(1).lower()
        name = found.group(2)
        if kind == 'blobstorage' and not name:
            # ZEO serves a <blobstorage>'s storage under the outer name.
            inner = _STORAGE_START.search(storage_conf, found.end())
            name = inner.group(2) if inner else None
        paths = _filestorage_paths(storage_conf)
        key = (os.getcwd(), paths[0] if paths else None)
        database = self.by_path.get(key) if paths else None
        if database is None:
            self.count += 1
            database = 'zeo_suite_%d_%d' % (os.getpid(), self.count)
            self.psql('CREATE DATABASE %s' % database)
            self.live.add(database)
            if paths:
                self.by_path[key] = database
        blobs = _BLOB_DIR.search(storage_conf)
        blob_dir = blob_dir or (blobs.group(1) if blobs else None)
        lines = ['%import relstorage',
                 '<relstorage%s>' % (' ' + name if name else '')]
        if blob_dir:
            lines.append('  blob-dir %s' % blob_dir)
            if kind == 'blobstorage' or blobs:
                # A server-side blob directory the test may look into.
                lines.append('  shared-blob-dir true')
        if _PACK_GC_OFF.search(storage_conf):
            lines.append('  pack-gc false')
        lines += ['  <postgresql>',
                  '    dsn host=%s dbname=%s user=postgres'
                  % (self.socket_dir, database),
                  '  </postgresql>', '</relstorage>']
        return '\n'.join(lines) + '\n', database

    def drop(self, database):
        for key, value in list(self.by_path.items()):
            if value == database:
                del self.by_path[key]
        if database in self.live:
            self.live.discard(database)
            self.psql('DROP DATABASE %s WITH (FORCE)' % database)

    def drop_all(self):
        for database in sorted(self.live):
            try:
                self.psql('DROP DATABASE %s WITH (FORCE)' % database)
            except (subprocess.SubprocessError, OSError):
                pass
        self.live = set()
        self.by_path = {}


def _force_client_conflict_resolution():
    """Makes ZEO's own server resolve no conflicts itself (triage)."""
    import ZEO._forker
    import ZEO.tests.forker
    original = ZEO._forker.start_zeo_server

    def start(storage_conf=None, zeo_conf=None, *args, **kw):
        if zeo_conf is None:
            zeo_conf = {}
        if isinstance(zeo_conf, dict):
            zeo_conf = dict(zeo_conf, client_conflict_resolution=True)
        elif hasattr(zeo_conf, 'address'):
            zeo_conf.client_conflict_resolution = True
        return original(storage_conf, zeo_conf, *args, **kw)

    ZEO._forker.start_zeo_server = start
    ZEO.tests.forker.start_zeo_server = start


def _die_with_parent():
    """A pre-exec hook making the server die with this process (Linux), so
    that a killed test run leaves no servers behind."""
    if not sys.platform.startswith('linux'):
        return None
    if threading.current_thread() is not threading.main_thread():
        # PR_SET_PDEATHSIG fires when the spawning *thread* exits.
        return None
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    PR_SET_PDEATHSIG = 1

    def hook():
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    return hook


_LISTENING = re.compile(rb'listening on (\S+)')


def _read_address(proc, timeout):
    """Reads stdout up to the ``listening on ADDR`` line and returns the
    address as ZEO does: ``(host, port)`` or a Unix socket path."""
    deadline = time.monotonic() + timeout
    buffered = b''
    fd = proc.stdout.fileno()
    while True:
        m = _LISTENING.search(buffered)
        if m and b'\n' in buffered[m.end():]:
            return _parse_address(m.group(1).decode())
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError('no "listening on" line within %ss' % timeout)
        ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError('zeo-server exited with status %s'
                                   % proc.wait())
            buffered += chunk


def _parse_address(text):
    if '/' in text:
        return text
    host, _, port = text.rpartition(':')
    if host.startswith('[') and host.endswith(']'):
        host = host[1:-1]
    return host, int(port)


def _drain(stream):
    try:
        while stream.read(65536):
            pass
    except (OSError, ValueError):
        pass


def _terminate(proc, timeout, log_path, workdir):
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        print('WARNING zeo-server did not stop within %ss; killed (%s)'
              % (timeout, log_path), file=sys.stderr)
        _record_hang(proc.pid, log_path, workdir)
        proc.kill()
        proc.wait()


def _record_hang(pid, log_path, workdir):
    """Appends what the stuck server's threads are doing, and the log files
    of its working directory, to its log for triage."""
    with open(log_path, 'a') as out:
        out.write('\n--- did not stop on SIGTERM; threads:\n')
        task_dir = '/proc/%d/task' % pid
        try:
            tids = sorted(os.listdir(task_dir), key=int)
        except OSError:
            tids = []
        for tid in tids:
            parts = []
            for name in ('comm', 'wchan', 'stack'):
                try:
                    with open(os.path.join(task_dir, tid, name)) as f:
                        parts.append(f.read().strip())
                except OSError:
                    pass
            out.write('%s %s\n' % (tid, ' | '.join(parts)))
        for name in sorted(os.listdir(workdir)):
            if name.endswith('.log'):
                out.write('--- %s\n' % name)
                try:
                    with open(os.path.join(workdir, name)) as f:
                        out.write(f.read()[-20000:])
                except OSError:
                    pass


_SECTION = re.compile(r'^\s*<(/?)([A-Za-z_-]+)')
_PATH = re.compile(r'^\s*path\s+(\S.*?)\s*$', re.IGNORECASE)


def _filestorage_paths(storage_conf):
    """The ``path`` values of ``<filestorage>`` sections."""
    paths = []
    inside = False
    for line in storage_conf.splitlines():
        m = _SECTION.match(line)
        if m:
            inside = not m.group(1) and m.group(2).lower() == 'filestorage'
            continue
        if inside:
            m = _PATH.match(line)
            if m:
                paths.append(m.group(1))
    return paths


def _remove_storage_files(workdir, paths):
    """What Python's ``FileStorage.cleanup`` removes after an unkept run."""
    for path in paths:
        full = os.path.join(workdir, path)
        for suffix in ('', '.index', '.index_tmp', '.lock', '.tmp', '.old',
                       '.pack'):
            try:
                os.remove(full + suffix)
            except OSError:
                pass


def _tail(path, lines=40):
    try:
        with open(path, 'rb') as f:
            text = f.read().decode('utf-8', 'replace')
    except OSError as e:
        return '(cannot read %s: %s)' % (path, e)
    return '\n'.join(text.splitlines()[-lines:])


# --- selection and skips -------------------------------------------------------

def load_skips(zeo_major, name='skips.txt'):
    """``skips.txt``: ``[root:][zeoN:]ID-PATTERN  reason`` per line; a
    ``root:`` line applies only when the suite runs as root."""
    skips = []
    as_root = hasattr(os, 'geteuid') and os.geteuid() == 0
    with open(os.path.join(HERE, name)) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            pattern, _, reason = line.partition(' ')
            if pattern.startswith('root:'):
                if not as_root:
                    continue
                pattern = pattern[len('root:'):]
            m = re.match(r'zeo(\d):(.*)', pattern)
            if m:
                if int(m.group(1)) != zeo_major:
                    continue
                pattern = m.group(2)
            skips.append((pattern, reason.strip()))
    return skips


def short_id(test):
    test_id = test.id()
    prefix = 'ZEO.tests.'
    return test_id[len(prefix):] if test_id.startswith(prefix) else test_id


def iter_tests(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from iter_tests(item)
        else:
            yield item


def blob_doctests():
    """The blob doctests of ZEO's ``testZEO.test_suite()``, built the way
    it builds them."""
    import doctest
    import zope.testing.setupstack
    from zope.testing import renormalizing
    import ZODB.tests.PackableStorage
    import ZODB.tests.testblob
    from ZEO.tests import forker, testZEO
    suite = unittest.TestSuite()
    suite.addTest(ZODB.tests.testblob.storage_reusable_suite(
        'ClientStorageNonSharedBlobs', testZEO.ServerManagingClientStorage))
    suite.addTest(ZODB.tests.testblob.storage_reusable_suite(
        'ClientStorageSharedBlobs', testZEO.create_storage_shared))
    patterns = [
        (re.compile("ZODB.POSException.POSKeyError"), "POSKeyError"),
        (re.compile(r"\[Errno \d+\]"), '[Errno N]'),
    ]
    suite.addTest(doctest.DocFileSuite(
        'zeo_blob_cache.test', package='ZEO.tests',
        setUp=forker.setUp, tearDown=zope.testing.setupstack.tearDown,
        checker=renormalizing.RENormalizing(patterns)))
    suite.addTest(ZODB.tests.PackableStorage.IExternalGC_suite(
        lambda: testZEO.ServerManagingClientStorageForIExternalGCTest(
            'data.fs', 'blobs', extrafsoptions='pack-gc false')))
    return list(iter_tests(suite))


def load_name(name):
    """Tests of ``module``, ``module.Class`` or ``module.Class.method``."""
    if name == BLOB_DOCTESTS:
        return blob_doctests()
    parts = name.split('.')
    module = importlib.import_module('ZEO.tests.' + parts[0])
    if len(parts) == 1:
        if hasattr(module, 'test_suite'):
            return list(iter_tests(module.test_suite()))
        return list(iter_tests(
            unittest.defaultTestLoader.loadTestsFromModule(module)))
    cls = getattr(module, parts[1])
    tests = []
    for prefix in ('check', 'test'):
        loader = unittest.TestLoader()
        loader.testMethodPrefix = prefix
        tests.extend(iter_tests(loader.loadTestsFromTestCase(cls)))
    if len(parts) > 2:
        tests = [t for t in tests if t.id().endswith('.' + parts[2])]
    return tests


class SkippedTest(unittest.TestCase):
    """Stands in for a test listed in skips.txt."""

    def __init__(self, test_id, reason):
        super().__init__('runTest')
        self._id = test_id
        self._reason = reason

    def id(self):
        return self._id

    def __str__(self):
        return self._id

    def runTest(self):
        self.skipTest(self._reason)


def select_tests(names, skips):
    modules_done = set()
    selected = []
    for name in names:
        if '*' in name:
            base = name.split('.')[0]
            candidates = load_name(base)
            if base not in modules_done:
                modules_done.add(base)
            candidates = [t for t in candidates
                          if fnmatch.fnmatchcase(short_id(t), name)]
        else:
            candidates = load_name(name)
        selected.extend(candidates)
    tests = []
    seen = set()
    for test in selected:
        if test.id() in seen:
            continue
        seen.add(test.id())
        sid = short_id(test)
        reason = next((r for p, r in skips if fnmatch.fnmatchcase(sid, p)),
                      None)
        tests.append(SkippedTest(test.id(), reason) if reason else test)
    return tests


# --- running -------------------------------------------------------------------

class TestTimeout(Exception):
    """Raised in the main thread when a test outlives its time."""


class SuiteResult(unittest.TextTestResult):
    """Records outcomes per class and bounds each test's run time."""

    launcher = None
    timeout = DEFAULT_TEST_TIMEOUT

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.per_class = {}
        self.started = None
        self.durations = []

    def _bucket(self, test):
        # Class for test methods, module for doctests.
        key = short_id(test).rsplit('.', 1)[0]
        return self.per_class.setdefault(key, dict(
            run=0, passed=0, failed=0, errors=0, skipped=0, seconds=0.0))

    def startTest(self, test):
        self.started = time.monotonic()
        if self.launcher:
            self.launcher.current_logs = []
        signal.alarm(self.timeout)
        # Backstop for a test that ignores the alarm (blocked in C code or
        # stuck in tearDown): dump every thread's stack and exit.
        faulthandler.dump_traceback_later(self.timeout * 2, exit=True)
        super().startTest(test)

    def stopTest(self, test):
        signal.alarm(0)
        faulthandler.cancel_dump_traceback_later()
        elapsed = time.monotonic() - self.started
        bucket = self._bucket(test)
        bucket['run'] += 1
        bucket['seconds'] += elapsed
        self.durations.append((elapsed, short_id(test)))
        super().stopTest(test)

    def _server_logs(self):
        if not self.launcher or not self.launcher.current_logs:
            return
        for path in self.launcher.current_logs:
            self.stream.writeln('--- tail of %s' % path)
            self.stream.writeln(_tail(path, 25))

    def addSuccess(self, test):
        self._bucket(test)['passed'] += 1
        super().addSuccess(test)

    def addFailure(self, test, err):
        self._bucket(test)['failed'] += 1
        super().addFailure(test, err)
        self.stream.writeln('FAIL %s\n%s'
                            % (short_id(test), self.failures[-1][1]))
        self._server_logs()

    def addError(self, test, err):
        if isinstance(test, unittest.TestCase):
            self._bucket(test)['errors'] += 1
        super().addError(test, err)
        self.stream.writeln('ERROR %s\n%s'
                            % (short_id(test), self.errors[-1][1]))
        self._server_logs()

    def addSkip(self, test, reason):
        self._bucket(test)['skipped'] += 1
        super().addSkip(test, reason)

    def addExpectedFailure(self, test, err):
        self._bucket(test)['passed'] += 1
        super().addExpectedFailure(test, err)

    def addUnexpectedSuccess(self, test):
        self._bucket(test)['failed'] += 1
        super().addUnexpectedSuccess(test)


def _on_alarm(signum, frame):
    raise TestTimeout('test did not finish within %ss'
                      % SuiteResult.timeout)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--server', default=os.environ.get('ZEO_SUITE_SERVER'),
                        help='the zeo-server binary ($ZEO_SUITE_SERVER)')
    parser.add_argument('--full', action='store_true',
                        default=bool(os.environ.get('ZEO_SUITE_FULL')),
                        help='run the full selection ($ZEO_SUITE_FULL=1)')
    parser.add_argument('--list', action='store_true',
                        help='list the selected test ids and exit')
    parser.add_argument('--test-timeout', type=int,
                        default=DEFAULT_TEST_TIMEOUT,
                        help='seconds one test may run')
    parser.add_argument('--log-dir', help='where server logs go '
                        '(default: a temporary directory, removed when '
                        'everything passed)')
    parser.add_argument('--python-server', action='store_true',
                        help="run against ZEO's own Python server (for "
                        'triage: does a test pass there?)')
    parser.add_argument('--client-conflict-resolution', action='store_true',
                        help='with --python-server: configure it with '
                        'client-conflict-resolution on, as zeo-server always '
                        'behaves')
    parser.add_argument('--postgres', metavar='SOCKET_DIR',
                        help='serve every storage from a fresh database of '
                        'the PostgreSQL cluster with its socket in SOCKET_DIR')
    parser.add_argument('-v', '--verbose', action='store_true')
    parser.add_argument('names', nargs='*')
    args = parser.parse_args(argv)

    zope_testing_shim.install()
    try:
        import mock  # noqa: F401  ZEO 5's tests import the backport
    except ImportError:
        import unittest.mock
        sys.modules['mock'] = unittest.mock

    zeo_version = importlib.metadata.version('ZEO')
    zeo_major = int(zeo_version.split('.')[0])
    if args.postgres:
        names = args.names or POSTGRES_SELECTION
    else:
        names = args.names or (CI_SELECTION
                               + (FULL_ONLY if args.full else []))

    if not args.list and not args.python_server:
        if not args.server or not os.access(args.server, os.X_OK):
            parser.error('--server (or $ZEO_SUITE_SERVER) must name the '
                         'zeo-server binary; got %r' % args.server)
    own_log_dir = args.log_dir is None
    log_dir = args.log_dir or tempfile.mkdtemp(prefix='zeo-suite-logs-')
    os.makedirs(log_dir, exist_ok=True)
    launcher = ServerLauncher(os.path.abspath(args.server or 'zeo-server'),
                              log_dir, args.postgres)
    if not args.python_server:
        launcher.install()
    elif args.client_conflict_resolution:
        _force_client_conflict_resolution()

    skips = load_skips(zeo_major)
    if args.postgres:
        skips = load_skips(zeo_major, 'skips_postgres.txt') + skips
    if not args.full and not args.names:
        skips += [(p, FULL_ONLY_REASON) for p in FULL_ONLY_TESTS]
    tests = select_tests(names, skips)
    if args.list:
        for test in tests:
            mark = ' (skip: %s)' % test._reason if isinstance(
                test, SkippedTest) else ''
            print(short_id(test) + mark)
        for name, reason in sorted(EXCLUDED.items()):
            print('%s (not selected: %s)' % (name, reason))
        return 0

    # Tests chdir into their own temporary directories; start from one too.
    workdir = tempfile.mkdtemp(prefix='zeo-suite-')
    os.chdir(workdir)
    signal.signal(signal.SIGALRM, _on_alarm)
    SuiteResult.launcher = launcher
    SuiteResult.timeout = args.test_timeout
    print('ZEO %s, %s%s, %d tests' % (
        zeo_version,
        'Python server' if args.python_server else 'zeo-server ' + args.server,
        ' on PostgreSQL' if args.postgres else '',
        len(tests)))
    sys.stdout.flush()
    runner = unittest.TextTestRunner(
        stream=sys.stdout, verbosity=2 if args.verbose else 1,
        resultclass=SuiteResult)
    started = time.monotonic()
    result = runner.run(unittest.TestSuite(tests))
    elapsed = time.monotonic() - started
    launcher.kill_all()
    os.chdir('/')
    zope_testing_shim.rmtree(workdir)

    print('\n%-72s %4s %4s %4s %4s %4s %7s' % (
        'class', 'run', 'pass', 'fail', 'err', 'skip', 'seconds'))
    totals = dict(run=0, passed=0, failed=0, errors=0, skipped=0)
    for key in sorted(result.per_class):
        c = result.per_class[key]
        print('%-72s %4d %4d %4d %4d %4d %7.1f' % (
            key, c['run'], c['passed'], c['failed'], c['errors'],
            c['skipped'], c['seconds']))
        for k in totals:
            totals[k] += c[k]
    print('%-72s %4d %4d %4d %4d %4d %7.1f' % (
        'TOTAL', totals['run'], totals['passed'], totals['failed'],
        totals['errors'], totals['skipped'], elapsed))
    slowest = sorted(result.durations, reverse=True)[:8]
    print('slowest: ' + ', '.join('%s %.1fs' % (n, s) for s, n in slowest))
    ok = result.wasSuccessful() and not result.errors
    failing = sorted(short_id(t) for t, _ in result.failures + result.errors)
    if ok and own_log_dir:
        zope_testing_shim.rmtree(log_dir)
    elif not ok:
        print('server logs kept in %s' % log_dir)
    summary = dict(zeo=zeo_version, seconds=round(elapsed, 1),
                   failing=failing, classes=result.per_class, **totals)
    print('ZEO_SUITE_SUMMARY ' + json.dumps(summary, sort_keys=True))
    sys.stdout.flush()
    return 0 if ok else 1


if __name__ == '__main__':
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Tests leave non-daemon client threads behind (ZEO's own runner exits
    # the same way); waiting for them could hang the run after it is done.
    os._exit(status)
