"""A small stand-in for the parts of ``zope.testing`` that ZEO's and ZODB's
test modules import.

The shared test venvs hold ZODB and ZEO but not ``zope.testing``, and ZEO's
test modules import it at module level (``setupstack`` for clean-up stacks,
``renormalizing`` for doctest checkers, ``loggingsupport`` for capturing log
records). When the real package is importable it is used; otherwise
``install()`` registers these modules under the same names.

Only the behaviour the selected tests rely on is provided: a clean-up stack
per test, a temporary working directory per test, a regex-normalizing
doctest checker and an in-memory log handler.
"""

import doctest
import logging
import os
import shutil
import stat
import sys
import tempfile
import types
import unittest
import unittest.mock


# --- setupstack --------------------------------------------------------------

_STACK_KEY = '__zeo_suite_setupstack'


def _namespace(test):
    """Where a test keeps its clean-up stack: doctests and ZODB's TestCase
    carry a ``globs`` dict; plain test cases use their instance dict."""
    globs = getattr(test, 'globs', None)
    if isinstance(globs, dict):
        return globs
    return test.__dict__


def register(test, function, *args, **kw):
    """Runs ``function(*args, **kw)`` when ``tearDown(test)`` is called,
    last registered first."""
    _namespace(test).setdefault(_STACK_KEY, []).append((function, args, kw))


def tearDown(test):
    """Unwinds the clean-up stack of ``test``."""
    stack = _namespace(test).get(_STACK_KEY)
    while stack:
        function, args, kw = stack.pop()
        function(*args, **kw)


def rmtree(path):
    """Removes a tree, making read-only entries writable first."""

    def retry_writable(func, failed, _exc_info):
        os.chmod(failed, stat.S_IWUSR | stat.S_IRUSR | stat.S_IXUSR)
        func(failed)

    if os.path.exists(path):
        shutil.rmtree(path, onerror=retry_writable)


def setUpDirectory(test):
    """Runs ``test`` in a new temporary directory, removed at tear-down."""
    tmp = tempfile.mkdtemp(prefix='zeo-suite-')
    register(test, rmtree, tmp)
    register(test, os.chdir, os.getcwd())
    os.chdir(tmp)


def context_manager(test, manager):
    """Enters ``manager`` now and exits it at tear-down."""
    entered = manager.__enter__()
    register(test, manager.__exit__, None, None, None)
    return entered


def mock(test, *args, **kw):
    """``unittest.mock.patch(*args, **kw)`` undone at tear-down."""
    return context_manager(test, unittest.mock.patch(*args, **kw))


class TestCase(unittest.TestCase):
    """A test case whose ``tearDown`` unwinds its clean-up stack."""

    def register(self, function, *args, **kw):
        register(self, function, *args, **kw)

    def setUpDirectory(self):
        setUpDirectory(self)

    def context_manager(self, manager):
        return context_manager(self, manager)

    def mock(self, *args, **kw):
        return mock(self, *args, **kw)

    def tearDown(self):
        tearDown(self)


# --- renormalizing -----------------------------------------------------------

class RENormalizing(doctest.OutputChecker):
    """A doctest checker that rewrites both expected and actual output with
    ``(compiled_regex, replacement)`` pairs before comparing."""

    def __init__(self, patterns):
        super().__init__()
        self.patterns = list(patterns)

    def __add__(self, other):
        # zope.testing's checkers combine with +, patterns of both applied.
        return RENormalizing(self.patterns + list(other.patterns))

    def _normalize(self, text):
        for pattern, replacement in self.patterns:
            if callable(pattern) and not hasattr(pattern, 'sub'):
                text = pattern(text)
            else:
                text = pattern.sub(replacement, text)
        return text

    def check_output(self, want, got, optionflags):
        if super().check_output(want, got, optionflags):
            return True
        return super().check_output(
            self._normalize(want), self._normalize(got), optionflags)

    def output_difference(self, example, got, optionflags):
        example = doctest.Example(
            example.source, self._normalize(example.want))
        return super().output_difference(
            example, self._normalize(got), optionflags)


# --- loggingsupport ----------------------------------------------------------

class InstalledHandler(logging.Handler):
    """Collects the records of the named loggers until ``uninstall``."""

    def __init__(self, *names, **kw):
        super().__init__()
        self.names = names or ('',)
        self.records = []
        self.level_to_set = kw.get('level', 1)
        self.setFormatter(logging.Formatter(kw.get(
            'format', '%(name)s %(levelname)s\n  %(message)s')))
        self._saved = {}
        for name in self.names:
            logger = logging.getLogger(name)
            self._saved[name] = (logger.level, logger.propagate)
            logger.setLevel(self.level_to_set)
            logger.addHandler(self)

    def emit(self, record):
        self.records.append(record)

    def clear(self):
        del self.records[:]

    def uninstall(self):
        for name in self.names:
            logger = logging.getLogger(name)
            level, _propagate = self._saved.get(name, (logging.NOTSET, True))
            logger.setLevel(level)
            logger.removeHandler(self)

    def __str__(self):
        return '\n'.join(
            f'{r.name} {r.levelname}\n  ' + '\n  '.join(
                r.getMessage().split('\n'))
            for r in self.records)


# --- installation ------------------------------------------------------------

def install():
    """Registers the stand-in modules unless ``zope.testing`` is importable.

    Returns ``True`` when the stand-in was installed.
    """
    try:
        import zope.testing.setupstack  # noqa: F401
        return False
    except ImportError:
        pass
    import zope  # namespace package provided by zope.interface

    package = types.ModuleType('zope.testing')
    package.__path__ = []
    modules = {
        'setupstack': dict(
            register=register, tearDown=tearDown, rmtree=rmtree,
            setUpDirectory=setUpDirectory, context_manager=context_manager,
            mock=mock, TestCase=TestCase),
        'renormalizing': dict(RENormalizing=RENormalizing),
        'loggingsupport': dict(InstalledHandler=InstalledHandler),
    }
    sys.modules['zope.testing'] = package
    zope.testing = package
    for name, members in modules.items():
        module = types.ModuleType('zope.testing.' + name)
        module.__dict__.update(members)
        sys.modules[module.__name__] = module
        setattr(package, name, module)
    return True
