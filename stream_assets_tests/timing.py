"""Pytest plugin: where the suite's time goes, printed at the end of every run (issue 26).

Registered like fixtures_kafka (conftest's `pytest_plugins`). Two tables follow pytest's own
`--durations` list:

- the set-up of each fixture that took a second or more (a broker, the S3 server, a
  SparkSession, `dagster dev`, a Spark cluster): how many times it was set up and its total;
- per test file: the time in set-up (fixtures, first use of the session's parts included),
  in test bodies and in teardown.

Under pytest-xdist the workers time their own fixtures and send the figures to the controller
with each test's report (`user_properties`), so the tables cover the whole run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from time import perf_counter

import pytest

FIXTURE_KEY = "fixture_setup_s"
SHOWN_FROM_S = 1.0  # fixtures quicker than this are not worth a line

_current: list[pytest.Item] = []
_fixtures: dict[str, list[float]] = defaultdict(list)
_files: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
_seen: set[tuple[str, str]] = set()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    _current.append(item)
    try:
        yield
    finally:
        _current.pop()


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest
                         ) -> Iterator[None]:
    start = perf_counter()
    yield
    took = perf_counter() - start
    if took >= SHOWN_FROM_S and _current:
        _current[-1].user_properties.append(
            (FIXTURE_KEY, f"{fixturedef.argname} ({fixturedef.scope})", round(took, 2)))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = report.nodeid.split("::", 1)[0]
    _files[path][report.when] += report.duration
    if report.when != "setup":
        return
    for entry in report.user_properties:
        if len(entry) == 3 and entry[0] == FIXTURE_KEY and (report.nodeid, entry[1]) not in _seen:
            _seen.add((report.nodeid, entry[1]))
            _fixtures[entry[1]].append(entry[2])


def pytest_terminal_summary(terminalreporter) -> None:
    if not _files:
        return
    write = terminalreporter.write_line
    terminalreporter.section("fixture set-up (each >= 1 s)")
    for name, times in sorted(_fixtures.items(), key=lambda kv: -sum(kv[1])):
        write(f"{sum(times):8.1f} s  {len(times):3d}x  {name}")
    write(f"{sum(sum(t) for t in _fixtures.values()):8.1f} s  in all")
    terminalreporter.section("time per test file (set-up / body / teardown)")
    for path, phases in sorted(_files.items(), key=lambda kv: -sum(kv[1].values())):
        write(f"{sum(phases.values()):8.1f} s  = {phases['setup']:7.1f} + {phases['call']:7.1f}"
              f" + {phases['teardown']:6.1f}  {path}")
