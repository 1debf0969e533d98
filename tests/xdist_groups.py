"""Make ``--dist loadgroup`` group tests by ``xdist_group`` again under pytest 9.2.

pytest-xdist 3.8 puts a test in its group by appending ``@<group>`` to the test's node id
(``item._nodeid``); pytest 9.2 keeps node ids in ``item._id`` instead, so the suffix is
lost and grouped tests are spread over the workers as if unmarked: every worker that gets
a Ray test starts a Ray head of its own (pytest-dev/pytest-xdist#1386; the fix is
pytest-dev/pytest-xdist#1388). This plugin appends the suffix where pytest now keeps the
id. It does nothing without loadgroup, or once xdist's own suffix takes effect: delete it
then. Meanwhile the short summary shows a grouped parametrised test as ``test_x[ray]@ray]``
(pytest rebuilds the id from its parts); the test to rerun is ``test_x[ray]``.
"""

from __future__ import annotations

import pytest

try:
    from _pytest.nodeid import NodeId
except ImportError:  # pytest before 9.2 keeps string node ids, which xdist's suffix reaches
    NodeId = None  # type: ignore[assignment,misc]  # the plugin then has nothing to do


def _groups(item: pytest.Item) -> list[str]:
    return sorted(
        {
            str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
            for mark in item.iter_markers("xdist_group")
        }
    )


@pytest.hookimpl(trylast=True)  # after xdist's own hook, whose suffix would come first
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Set by xdist in its workers only, where the ids sent to the scheduler are made.
    if NodeId is None or not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        groups = _groups(item)
        if groups and "@" not in item.nodeid:
            # pytest's private id (see the module docstring): what ``item.nodeid`` returns.
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(groups)}")
