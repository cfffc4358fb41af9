"""The topics cdrflow writes beside an input topic (``<topic>.rated``, ``.rejected``,
``.usage``): made on first use with the input topic's partitions, so that a record's
partition can follow its input's, by whichever worker comes first."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from schemas.errors import CdrflowError


def output_topic(topic: str, kind: str) -> str:
    """The topic of ``kind`` (rated, rejected, usage) beside the input topic ``topic``."""
    return f"{topic}.{kind}"


def ensure_outputs(
    config: Mapping[str, Any],
    topic: str,
    kinds: Sequence[str],
    timeout: float = 30.0,
    hint: str = "",
) -> dict[str, int]:
    """``<topic>.<kind>`` for each of ``kinds``, created with the input topic's partitions
    if absent: each one's partition count. The input topic must exist when one is absent
    (``hint``, in parentheses, tells the operator what names it)."""
    bootstrap = config["bootstrap.servers"]
    admin = AdminClient(dict(config))
    try:
        meta = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise CdrflowError(
            f"cannot reach Kafka at {bootstrap} within {timeout:.0f} s ({exc.args[0].str()})"
        ) from None
    names = {kind: output_topic(topic, kind) for kind in kinds}
    found = {kind: len(meta.topics[n].partitions) for kind, n in names.items() if n in meta.topics}
    if len(found) == len(names):
        return found
    if topic not in meta.topics:
        raise CdrflowError(
            f"Kafka topic {topic!r} does not exist on {bootstrap}" + (f" ({hint})" if hint else "")
        )
    partitions = len(meta.topics[topic].partitions)
    new = [NewTopic(n, partitions) for kind, n in names.items() if kind not in found]
    for future in admin.create_topics(new).values():
        try:
            future.result(timeout)
        except KafkaException as exc:  # another worker made it first
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return {kind: found.get(kind, partitions) for kind in kinds}


__all__ = ["ensure_outputs", "output_topic"]
