"""Transactional messages with the official clients: commit, rollback, check-back answered with
COMMIT / ROLLBACK / UNKNOWN, a new producer process resolving an orphan, and kill -9.

The brokers use short timings (transaction timeout 2 s, check interval 2 s, check max 3)."""
import uuid

import pytest

from conftest import ALL_CLIENTS, admin, run_client, wait_for

TIMING = dict(transaction_timeout_ms=2000, transaction_check_interval_ms=2000)
INTERVAL_S = 2


@pytest.fixture
def tx_broker(broker_factory):
    return broker_factory(transaction_check_max=3, **TIMING)


def topic():
    return f"tx-{uuid.uuid4().hex[:8]}"


def txs(broker, t):
    return admin(broker, "tx", "list", "--topic", t)


def ids(lines, key="id"):
    return sorted(m[key] for m in lines if key in m)


@pytest.mark.parametrize("kind", ALL_CLIENTS)
def test_commit_is_visible_exactly_once(tx_broker, kind):
    t = topic()
    sent = run_client(kind, "txsend", tx_broker, topic=t, count=5, action="commit")
    got = run_client(kind, "receive", tx_broker, topic=t, group="g", count=5, timeout=30)
    assert ids(got) == ids(sent)
    assert run_client(kind, "receive", tx_broker, topic=t, group="g", count=1, poll=1, timeout=3) == []
    assert txs(tx_broker, t)["open"] == 0


@pytest.mark.parametrize("kind", ALL_CLIENTS)
def test_rollback_is_never_visible(tx_broker, kind):
    t = topic()
    assert len(run_client(kind, "txsend", tx_broker, topic=t, count=3, action="rollback")) == 3
    # Three check intervals pass: nothing is asked and nothing appears.
    assert run_client(kind, "receive", tx_broker, topic=t, group="g", count=1, poll=2, timeout=3 * INTERVAL_S + 1) == []
    state = txs(tx_broker, t)
    assert state["open"] == 0 and state["counters"]["checks_sent"] == 0


@pytest.mark.parametrize("kind", ALL_CLIENTS)
def test_unresolved_then_checker_commits(tx_broker, kind):
    t = topic()
    out = run_client(kind, "txsend", tx_broker, topic=t, count=2, action="none", checker="commit", until_checks=2, hold=30)
    assert ids(out, "check") == ids(out), "each open transaction is checked back"
    got = run_client(kind, "receive", tx_broker, topic=t, group="g", count=2, timeout=30)
    assert ids(got) == ids(out)


@pytest.mark.parametrize("kind", ALL_CLIENTS)
def test_unresolved_then_checker_rolls_back(tx_broker, kind):
    t = topic()
    out = run_client(kind, "txsend", tx_broker, topic=t, count=2, action="none", checker="rollback", until_checks=2, hold=30)
    assert ids(out, "check") == ids(out)
    wait_for(lambda: txs(tx_broker, t)["open"] == 0, 10, "the rollbacks to be recorded")
    assert run_client(kind, "receive", tx_broker, topic=t, group="g", count=1, poll=2, timeout=3 * INTERVAL_S + 1) == []


@pytest.mark.parametrize("kind", ALL_CLIENTS)
def test_unknown_answers_are_checked_again_then_rolled_back_at_check_max(tx_broker, kind):
    t = topic()
    out = run_client(kind, "txsend", tx_broker, topic=t, count=1, action="none", checker="unknown", until_checks=3, hold=30)
    [sent] = ids(out)
    assert ids(out, "check") == [sent] * 3, "checked once per interval, three times (check max 3)"
    state = wait_for(lambda: (s := txs(tx_broker, t))["open"] == 0 and s, 15, "the rollback after the check max")
    assert state["counters"]["check_max_rollbacks"] == 1
    assert run_client(kind, "receive", tx_broker, topic=t, group="g", count=1, poll=1, timeout=3) == []


@pytest.mark.parametrize("kind", ALL_CLIENTS)
def test_a_new_producer_process_resolves_an_orphaned_transaction(tx_broker, kind):
    t = topic()
    # The first producer sends and exits without ending its transaction.
    [orphan] = ids(run_client(kind, "txsend", tx_broker, topic=t, count=1, action="none"))
    assert txs(tx_broker, t)["open"] == 1
    # Another process producing to the same topic gets the check-back and commits.
    out = run_client(kind, "txsend", tx_broker, topic=t, count=0, checker="commit", until_checks=1, hold=30)
    assert ids(out, "check") == [orphan]
    got = run_client(kind, "receive", tx_broker, topic=t, group="g", count=1, timeout=30)
    assert ids(got) == [orphan]


def test_kill9_with_open_and_committed_transactions(broker_factory):
    """SYNC_FLUSH, no snapshot since the transactions began (so restart replays them all from the
    CommitLog): committed ones are visible exactly once, open ones are checked and end as the
    checker says."""
    b = broker_factory(flush_disk_type="sync", transaction_check_max=15, consumer_snapshot_interval_ms=3_600_000, **TIMING)
    t = topic()
    committed = ids(run_client("python", "txsend", b, topic=t, count=1000, action="commit", proc_timeout=180))
    # Open ones: while this producer lives its checker answers UNKNOWN, so they stay open.
    pending = ids(run_client("python", "txsend", b, topic=t, count=1000, action="none", checker="unknown", proc_timeout=180))
    assert len(committed) == len(pending) == 1000
    assert txs(b, t)["open"] == 1000
    b.kill9()
    b.start()
    assert txs(b, t)["open"] == 1000, "open transactions survive kill -9"
    out = run_client("python", "txsend", b, topic=t, count=0, checker="rollback", until_checks=1000, hold=90)
    assert set(ids(out, "check")) == set(pending), "every open transaction is checked back"
    wait_for(lambda: txs(b, t)["open"] == 0, 15, "every open transaction to end")
    got = run_client("python", "receive", b, topic=t, group="g", count=1000, invisible=60, timeout=90)
    assert ids(got) == committed, "committed exactly once; rolled back never"
    assert run_client("python", "receive", b, topic=t, group="g", count=1, poll=1, timeout=3) == []
