"""Pytest plugin: where the suite's time goes, printed at the end of every run (issue 26).

Registered like fixtures_kafka (conftest's `pytest_plugins`). Two tables follow pytest's own
`--durations` list:

- the set-up of each fixture that took a second or more (a broker, the S3 server, a
  SparkSession, `dagster dev`, a Spark cluster): how many times it was set up and its total;
  the same for teardowns (a session's parts stop in the last test's teardown, at the run's end);
- per test file: the time in set-up (fixtures, first use of the session's parts included),
  in test bodies and in teardown.

Under pytest-xdist the workers time their own fixtures and send the figures to the controller
with each test's report (`user_properties`), so the tables cover the whole run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from time import perf_counter

import pytest

FIXTURE_KEY = "fixture_setup_s"
TEARDOWN_KEY = "fixture_teardown_s"
SHOWN_FROM_S = 1.0  # fixtures quicker than this are not worth a line

_current: list[pytest.Item] = []
_fixtures: dict[str, list[float]] = defaultdict(list)
_teardowns: dict[str, list[float]] = defaultdict(list)
_tearing: dict[int, float] = {}
_files: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
_seen: set[tuple[str, str, str]] = set()


@contextmanager
def _timing_for(item: pytest.Item) -> Iterator[None]:
    """Fixture set-ups and teardowns inside are reported on `item`."""
    _current.append(item)
    try:
        yield
    finally:
        _current.pop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with _timing_for(item):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    with _timing_for(item):
        yield


def _named(fixturedef: pytest.FixtureDef) -> str:
    return f"{fixturedef.argname} ({fixturedef.scope})"


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest
                         ) -> Iterator[None]:
    start = perf_counter()
    yield
    took = perf_counter() - start
    if took >= SHOWN_FROM_S and _current:
        _current[-1].user_properties.append((FIXTURE_KEY, _named(fixturedef), round(took, 2)))
    # Finalizers run last-added first: this one marks the start of the fixture's own teardown.
    fixturedef.addfinalizer(lambda: _tearing.__setitem__(id(fixturedef), perf_counter()))


def pytest_fixture_post_finalizer(fixturedef: pytest.FixtureDef,
                                  request: pytest.FixtureRequest) -> None:
    start = _tearing.pop(id(fixturedef), None)
    if start is None or not _current:
        return
    took = perf_counter() - start
    if took >= SHOWN_FROM_S:
        _current[-1].user_properties.append((TEARDOWN_KEY, _named(fixturedef), round(took, 2)))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = report.nodeid.split("::", 1)[0]
    _files[path][report.when] += report.duration
    wanted = {"setup": (FIXTURE_KEY, _fixtures), "teardown": (TEARDOWN_KEY, _teardowns)}
    if report.when not in wanted:
        return
    key, table = wanted[report.when]
    for entry in report.user_properties:
        if len(entry) == 3 and entry[0] == key and (report.nodeid, key, entry[1]) not in _seen:
            _seen.add((report.nodeid, key, entry[1]))
            table[entry[1]].append(entry[2])


def pytest_terminal_summary(terminalreporter) -> None:
    if not _files:
        return
    write = terminalreporter.write_line
    terminalreporter.section("fixture set-up (each >= 1 s)")
    for name, times in sorted(_fixtures.items(), key=lambda kv: -sum(kv[1])):
        write(f"{sum(times):8.1f} s  {len(times):3d}x  {name}")
    write(f"{sum(sum(t) for t in _fixtures.values()):8.1f} s  in all")
    if _teardowns:
        terminalreporter.section("fixture teardown (each >= 1 s)")
        for name, times in sorted(_teardowns.items(), key=lambda kv: -sum(kv[1])):
            write(f"{sum(times):8.1f} s  {len(times):3d}x  {name}")
    terminalreporter.section("time per test file (set-up / body / teardown)")
    for path, phases in sorted(_files.items(), key=lambda kv: -sum(kv[1].values())):
        write(f"{sum(phases.values()):8.1f} s  = {phases['setup']:7.1f} + {phases['call']:7.1f}"
              f" + {phases['teardown']:6.1f}  {path}")
