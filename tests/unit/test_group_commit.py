import threading
from types import SimpleNamespace

import pytest
from eventsourcing.persistence import IntegrityError, ProgrammingError

from commands.group_commit import GroupCommit

pytestmark = pytest.mark.unit


class FakeStore:
    """Saves events, numbering them; the first save blocks until released, so that the
    commands arriving meanwhile queue up behind it; "clash" events conflict."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.release = threading.Event()
        self.first_entered = threading.Event()
        self.position = 0
        self.lock = threading.Lock()

    def save(self, *events, records=()):
        with self.lock:
            self.calls.append([e.name for e in events])
            first = len(self.calls) == 1
        if first:
            self.first_entered.set()
            self.release.wait(5)
        if any(e.name.startswith("clash") for e in events):
            raise IntegrityError("conflict")
        if len(events) == 1 and events[0].name.startswith("broken"):  # only when saved alone
            raise ProgrammingError('prepared statement "_pg3_2" does not exist')
        recordings = []
        for e in events:
            self.position += 1
            recordings.append(
                SimpleNamespace(domain_event=e, notification=SimpleNamespace(id=self.position))
            )
        return recordings


def event(name):
    return SimpleNamespace(name=name)


def run_concurrently(group, names):
    results, threads = {}, []

    def go(name):
        try:
            results[name] = group.commit([event(name)])
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            results[name] = exc

    for name in names:
        threads.append(threading.Thread(target=go, args=(name,)))
        threads[-1].start()
    return results, threads


def test_commands_arriving_during_a_commit_share_the_next_transaction():
    store = FakeStore()
    group = GroupCommit(store.save)
    results, threads = run_concurrently(group, ["first"])
    assert store.first_entered.wait(5)
    more, more_threads = run_concurrently(group, [f"c{i}" for i in range(20)])
    while len(group._queue) < 20:  # all twenty are waiting behind the first commit
        threading.Event().wait(0.01)
    store.release.set()
    for t in threads + more_threads:
        t.join(5)
    assert store.calls[0] == ["first"]
    assert sorted(store.calls[1]) == sorted(f"c{i}" for i in range(20))
    assert len(store.calls) == 2
    positions = sorted([results["first"], *more.values()])
    assert positions == list(range(1, 22))


def test_a_conflict_in_a_batch_fails_only_its_own_command():
    store = FakeStore()
    group = GroupCommit(store.save)
    results, threads = run_concurrently(group, ["first"])
    assert store.first_entered.wait(5)
    more, more_threads = run_concurrently(group, ["a", "clash", "b"])
    while len(group._queue) < 3:
        threading.Event().wait(0.01)
    store.release.set()
    for t in threads + more_threads:
        t.join(5)
    assert isinstance(more["clash"], IntegrityError)
    assert isinstance(more["a"], int) and isinstance(more["b"], int)
    # the batch was tried once whole, then one command at a time
    assert sorted(store.calls[1]) == ["a", "b", "clash"]
    assert sorted(map(tuple, store.calls[2:])) == [("a",), ("b",), ("clash",)]


def test_a_lone_command_is_saved_at_once_and_gets_its_position():
    store = FakeStore()
    store.release.set()
    group = GroupCommit(store.save)
    assert group.commit([event("x"), event("y")]) == 2
    assert group.commit([event("z")]) == 3


def test_a_failing_retry_in_the_fallback_is_only_its_own_commands_answer():
    store = FakeStore()
    group = GroupCommit(store.save)
    results, threads = run_concurrently(group, ["first"])
    assert store.first_entered.wait(5)
    answers, more_threads = [], []
    for name in ["broken", "a", "clash", "b"]:  # queued in this order: the fallback's order
        queued = len(group._queue)
        answer, started = run_concurrently(group, [name])
        answers.append(answer)
        more_threads += started
        while len(group._queue) == queued:
            threading.Event().wait(0.01)
    store.release.set()
    for t in threads + more_threads:
        t.join(5)
    results = {k: v for answer in answers for k, v in answer.items()}
    assert isinstance(results["broken"], ProgrammingError)
    assert isinstance(results["clash"], IntegrityError)
    assert isinstance(results["a"], int) and isinstance(results["b"], int)
    assert sorted(map(tuple, store.calls[2:])) == [("a",), ("b",), ("broken",), ("clash",)]
