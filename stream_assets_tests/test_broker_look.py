"""A catch-up run asks the broker each question once (issue 15): the run's BrokerLook.

Against the session's real broker: what a look answered stays its answer for the run, while
the source itself (what live measures use) always asks again; each Dagster run gets a look of
its own, shared by the run's steps.
"""

import pytest
from dagster import AssetExecutionContext, asset, build_resources, materialize

from stream_assets.dev.generator import Record
from stream_assets.dev.producer import produce
from stream_assets.errors import KafkaUnavailable
from stream_assets.resources import KafkaSource
from stream_assets.resources.kafka import KafkaConnection

pytestmark = pytest.mark.integration


def send(bootstrap: str, topic: str, count: int) -> None:
    produce([Record(topic, None, f"v{i}".encode()) for i in range(count)],
            KafkaConnection(bootstrap_servers=bootstrap))


def latest(offsets: dict[str, tuple[int, int]]) -> int:
    return sum(high for _, high in offsets.values())


def test_a_run_look_answers_each_question_once_and_the_source_asks_again(
        kafka_broker, topic_factory):
    bootstrap = kafka_broker.bootstrap
    events, later = topic_factory("look_events"), f"look_later_{id(object())}"
    send(bootstrap, events, 5)
    with build_resources({"kafka": KafkaSource(bootstrap_servers=bootstrap,
                                               connect_timeout_s=3)}) as resources:
        source = resources.kafka
        look = source.run_look()
        assert source.run_look() is look  # one look for the run
        look.check_reachable((events,))
        assert latest(look.offsets(events)) == 5

        send(bootstrap, events, 3)
        assert latest(look.offsets(events)) == 5  # the positions the run compares with
        assert latest(source.offsets(events)) == 8  # what a live measure reads

        # A topic created after the look's first answer is asked about again, and found.
        kafka_broker.create_topics([later], partitions=1)
        try:
            look.check_reachable((later,))
        finally:
            kafka_broker.delete_topics([later])
        with pytest.raises(KafkaUnavailable, match="do not exist"):
            look.check_reachable((f"{later}_never",))

    with build_resources({"kafka": KafkaSource(bootstrap_servers=bootstrap)}) as resources:
        assert latest(resources.kafka.run_look().offsets(events)) == 8  # a new run looks anew

    outside = KafkaSource(bootstrap_servers=bootstrap)
    assert outside.run_look() is not outside.run_look()  # no run: nothing is kept


def test_the_steps_of_one_run_share_its_look_and_the_next_run_has_its_own(kafka_broker):
    seen: dict[str, list[int]] = {}

    def record(context: AssetExecutionContext, stream_source: KafkaSource) -> None:
        seen.setdefault(context.run_id, []).append(id(stream_source.run_look()))

    @asset
    def first(context: AssetExecutionContext, stream_source: KafkaSource) -> None:
        record(context, stream_source)

    @asset(deps=[first])
    def second(context: AssetExecutionContext, stream_source: KafkaSource) -> None:
        record(context, stream_source)

    resources = {"stream_source": KafkaSource(bootstrap_servers=kafka_broker.bootstrap)}
    for _ in range(2):
        assert materialize([first, second], resources=resources).success
    assert [len(set(looks)) for looks in seen.values()] == [1, 1]
    assert len({looks[0] for looks in seen.values()}) == 2
