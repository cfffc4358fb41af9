"""Kafka's default partitioner over many keys at once agrees with aiokafka's own, and the
holds' changelog places its records where aiokafka's producer would."""

from __future__ import annotations

from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from aiokafka.producer.producer import AIOKafkaProducer
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.live.changelog import _partitions
from pipelines.partitioner import murmur2, partitions

KEYS = st.lists(st.binary(max_size=80), max_size=40)


@settings(max_examples=300, deadline=None)
@given(keys=KEYS)
def test_murmur2_is_aiokafkas(keys: list[bytes]) -> None:
    assert murmur2(keys).tolist() == [aiokafka_murmur2(key) for key in keys]


@settings(max_examples=200, deadline=None)
@given(keys=KEYS, count=st.integers(1, 12))
def test_partitions_are_the_default_partitioners(keys: list[bytes], count: int) -> None:
    listed = list(range(count))[::-1]  # the order the producer lists them in is kept
    default = DefaultPartitioner()
    assert partitions(keys, listed) == [default(key, listed, listed) for key in keys]


class _Metadata:
    def __init__(self, listed: list[int]) -> None:
        self.listed = listed

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(self.listed)

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return set(self.listed)


class _Producer:
    """What the changelog's writes read of aiokafka's producer, with its own ``_partition``."""

    def __init__(self, partitioner: Any, listed: list[int]) -> None:
        self._partitioner = partitioner
        self._metadata = _Metadata(listed)

    def _partition(self, *args: Any) -> int:
        placed: int = AIOKafkaProducer._partition(self, *args)
        return placed


@settings(max_examples=100, deadline=None)
@given(keys=st.lists(st.binary(min_size=1, max_size=40), max_size=30), count=st.integers(1, 8))
def test_the_changelog_places_records_as_the_producer_would(keys: list[bytes], count: int) -> None:
    producer = _Producer(DefaultPartitioner(), list(range(count)))
    records = [(key, b"{}") for key in keys]
    expected = [producer._partition("t", None, None, None, key, value) for key, value in records]
    assert _partitions(producer, "t", records) == expected


def test_another_partitioner_is_asked_itself() -> None:
    asked = []

    def last(key: bytes, all_partitions: list[int], available: list[int]) -> int:
        asked.append(key)
        return all_partitions[-1]

    producer = _Producer(last, [0, 1, 2])
    assert _partitions(producer, "t", [(b"a", None), (b"b", b"{}")]) == [2, 2]
    assert asked == [b"a", b"b"]
