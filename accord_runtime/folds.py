"""States folded from event streams, kept between uses and read on instead of from the start.

An aggregate that lives for years (an agreement, its KPI book, its health stream) would otherwise
be replayed from its first event by every command or evaluation. `KeptFolds` keeps the states of
the streams used lately, each with the stream version and the id of the event it was folded up
to, and reads a stream on from that event. The stream holds the truth: if that event is not the
one folded any more (the append it came from was rolled back), or a state was never kept, the
stream is folded again from the start. What other processes appended meanwhile is always read
before the state is used.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar
from uuid import UUID

from accord_runtime.eventstore import EventStore
from contracts import CloudEvent

S = TypeVar("S")


@dataclass
class Folded(Generic[S]):
    """A state folded from a stream up to the event `head`, at stream version `version`."""

    state: S
    version: int = 0
    head: UUID | None = None


class KeptFolds(Generic[S]):
    """The states of one kind of stream, kept for the `size` streams used last."""

    def __init__(self, start: Callable[[UUID], S], fold: Callable[[S, list[CloudEvent]], object],
                 stream: Callable[[UUID], str], *, size: int = 256) -> None:
        self._start, self._fold, self._stream, self._size = start, fold, stream, size
        self._kept: OrderedDict[UUID, Folded[S]] = OrderedDict()

    async def take(self, store: EventStore, key: UUID) -> Folded[S]:
        """The state of `key`'s stream as `store` reads it now, the caller's alone: it leaves the kept
        ones until the caller `keep`s it, so a caller that fails leaves nothing half-changed."""
        folded, stream = self._kept.pop(key, None), self._stream(key)
        if folded is not None:
            envelopes = await store.read_stream(stream, from_version=folded.version)
            if envelopes and envelopes[0].id == folded.head:
                return self._folded(folded, envelopes[1:])
        return self._folded(Folded(self._start(key)), await store.read_stream(stream))

    def keep(self, key: UUID, folded: Folded[S]) -> None:
        """Keep `folded` for the next `take`; the least recently kept go first."""
        if folded.head is not None:
            self._kept[key] = folded
            while len(self._kept) > self._size:
                self._kept.popitem(last=False)

    def _folded(self, folded: Folded[S], envelopes: list[CloudEvent]) -> Folded[S]:
        self._fold(folded.state, envelopes)
        if envelopes:
            folded.version, folded.head = envelopes[-1].sequence, envelopes[-1].id
        return folded
