"""``POST /authorize`` (SPEC §9, §9.1): the live side of call authorization.

The decision is ``rating.authorize``'s (the engine's own pricing, exact ``max_seconds``);
this module adds what needs state: channel holds and the CPS window, of the customer and of
the auth entry that identified the call, both applied (a limit is reached when the count
equals it; none set is unlimited, 0 allows nothing).

An allowed call holds a channel until its CDR arrives (its callid in a usage message:
``Live.on_callids``, rated or rejected) or ``max_seconds + 60`` s pass (a 1-second timer,
and a look before every batch of requests). Holds live in the changelog-backed ``holds``
table (callid → the hold and its answer), its changelog written a batch of requests at a
time (``pipelines.live.changelog``), so a restarted worker keeps them; a repeated
callid that holds a channel gets the same answer again. The CPS window is the allowed
authorizations of the last second, on the monotonic clock, in memory: a restart loses at
most one second of it. Hold expiries are on the app's clock (``Live.now``, so
``$CDRFLOW_NOW`` moves them).

Requests are decided in batches: a request waits for the running batch, then every request
that arrived meanwhile (``GATHER_TURNS``) is decided with one engine call for the routing
fields not seen before (about 70 µs however few its calls, a few more a call), then the
holds are applied one request at a time in arrival order, so that concurrent requests for
one customer are counted exactly. An answer is made into its JSON text once: an allowed
call's hold keeps that text, and a repeat of its callid is sent the same.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from faust.web import Request, Response, View

from pipelines.live.changelog import Writes
from rating.authorize import Authorizer, Decision, Funds, decide_many, micro_of, problem

if TYPE_CHECKING:
    from pipelines.live.app import Live

log = logging.getLogger("cdrflow.live")

MAX_BODY = 64 * 1024  # SPEC §9.1: a larger body is answered 413
HOLD_GRACE = 60  # SPEC §9: a hold lasts max_seconds + 60 s unless its CDR comes first
CPS_WINDOW = 1.0  # seconds: CPS is the allowed authorizations of the last second
TICK = 1.0
# Turns of the event loop a batch waits before it is taken: a request read from its socket
# needs a few (aiohttp's handler, faust's view, the body) to reach the queue. One turn made
# batches of about 10 at 16 connections, three of about 15, and with every number new the
# worker answered 4,600-5,100 requests/s instead of 3,600-4,200 (alternating runs); six
# were slower again (docs/benchmarks.md).
GATHER_TURNS = 3

Scope = tuple[str, str]  # ("customer", customer_id) or ("auth", the auth entry's key)


# A channel held by an allowed call: (customer_id, the auth entry's key or None, when it
# ends in epoch seconds of the app's clock, the answer a repeat of its callid gets as JSON
# text). A plain tuple of strings and numbers, which the collector stops tracking: a busy
# gate holds hundreds of thousands, and full collections that scanned them all stalled it
# (docs/benchmarks.md). The holds table keeps ``hold_json``, a dict of the same four.
Hold = tuple[str, str | None, float, str]


def hold_of(customer_id: str, entry: str | None, expires: float, answer: str) -> Hold:
    """The hold of an allowed call whose answer is ``answer`` (``answer_text``)."""
    return (customer_id, entry, float(expires), answer)


# An answer as the JSON text it is sent as: made once per call, and kept by its hold.
answer_text = json.JSONEncoder(separators=(",", ":")).encode


def hold_json(hold: Hold) -> dict[str, Any]:
    customer_id, entry, expires, answer = hold
    return {"customer_id": customer_id, "entry": entry, "expires": expires, "answer": answer}


def hold_read(data: Mapping[str, Any]) -> Hold:
    """A hold from its table value (``hold_json``); KeyError, TypeError or ValueError when
    it is none."""
    answer = data["answer"]
    if not isinstance(answer, str) or not isinstance(json.loads(answer), dict):
        raise TypeError("its answer is not a JSON object's text")
    entry = data.get("entry")
    return (str(data["customer_id"]), None if entry is None else str(entry),
            float(data["expires"]), answer)  # fmt: skip


def hold_scopes(hold: Hold) -> list[Scope]:
    """The scopes whose channels a hold takes: its customer's, and its auth entry's."""
    out: list[Scope] = [("customer", hold[0])]
    if hold[1] is not None:
        out.append(("auth", hold[1]))
    return out


@dataclass
class Holds:
    """Channel holds and CPS windows by scope: pure bookkeeping, in memory (the gate mirrors
    holds to its table). Times: ``expires`` on the app's clock, CPS on a monotonic one."""

    by_callid: dict[str, Hold] = field(default_factory=dict)
    channels: dict[Scope, int] = field(default_factory=dict)
    recent: dict[Scope, deque[float]] = field(default_factory=dict)
    _expiry: list[tuple[float, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.by_callid)

    def get(self, callid: str) -> Hold | None:
        return self.by_callid.get(callid)

    def add(self, callid: str, hold: Hold) -> None:
        """Hold a channel for ``callid`` (a callid already held keeps its first hold)."""
        if callid in self.by_callid:
            return
        self.by_callid[callid] = hold
        for scope in hold_scopes(hold):
            self.channels[scope] = self.channels.get(scope, 0) + 1
        heapq.heappush(self._expiry, (hold[2], callid))

    def free(self, callid: str) -> Hold | None:
        """Release ``callid``'s channel; the hold, or None when it held none."""
        hold = self.by_callid.pop(callid, None)
        if hold is not None:
            for scope in hold_scopes(hold):
                left = self.channels[scope] - 1
                if left:
                    self.channels[scope] = left
                else:
                    del self.channels[scope]
        return hold

    def expired(self, now: float) -> list[str]:
        """The callids whose holds end at or before ``now`` (not yet freed)."""
        out = []
        while self._expiry and self._expiry[0][0] <= now:
            expires, callid = heapq.heappop(self._expiry)
            hold = self.by_callid.get(callid)
            if hold is not None and hold[2] == expires:
                out.append(callid)
        return out

    def allowed(self, scopes: Iterable[Scope], moment: float) -> None:
        """Count one allowed authorization at monotonic ``moment`` in each scope's window."""
        for scope in scopes:
            self.recent.setdefault(scope, deque()).append(moment)

    def cps(self, scope: Scope, moment: float) -> int:
        """Allowed authorizations of ``scope`` in the second up to ``moment``."""
        window = self.recent.get(scope)
        if window is None:
            return 0
        while window and window[0] <= moment - CPS_WINDOW:
            window.popleft()
        if not window:
            del self.recent[scope]
            return 0
        return len(window)

    def reached(
        self, limits: Iterable[tuple[Scope, int | None, int | None]], moment: float
    ) -> str | None:
        """``channels`` or ``cps`` when a scope's count equals (or passes) its limit (None:
        unlimited), channels first; else None. ``limits``: (scope, channels, cps)."""
        limits = list(limits)
        for scope, channels, _ in limits:
            if channels is not None and self.channels.get(scope, 0) >= channels:
                return "channels"
        for scope, _, cps in limits:
            if cps is not None and self.cps(scope, moment) >= cps:
                return "cps"
        return None


@dataclass
class _Request:
    call: dict[str, Any]
    answer: asyncio.Future[str]


class Gate:
    """The authorization view's state and batching, for one live app."""

    def __init__(self, live: Live) -> None:
        self.live = live
        self.table = live.table("holds")
        self.writes = Writes(live.app, self.table)  # its changelog a batch at a time
        self.holds = Holds()
        self._loaded = False
        self._queue: list[_Request] = []
        self._running: asyncio.Task[None] | None = None
        self.monotonic: Callable[[], float] = time.monotonic

    # -- the hooks the live app calls --------------------------------------------------------

    def free(self, callids: list[str]) -> None:
        """Their CDRs arrived (rated or rejected): their channels are free."""
        loaded = self._load()
        for callid in callids:
            if self.holds.free(callid) is not None or not loaded:
                self._forget(callid)

    def values(self, customer_id: str) -> dict[str, Any]:
        """Channels up and CPS now of a customer (its values and JSON)."""
        self._load()  # a restarted worker's holds, as soon as its tables are recovered
        scope = ("customer", customer_id)
        return {
            "channels": self.holds.channels.get(scope, 0),
            "cps": self.holds.cps(scope, self.monotonic()),
        }

    async def tick(self) -> None:
        if self._load():
            self.expire()

    def expire(self) -> None:
        now = self.live.now().timestamp()
        for callid in self.holds.expired(now):
            self.holds.free(callid)
            self._forget(callid)

    def _load(self) -> bool:
        """The holds of the table (a restarted worker's), once it is recovered."""
        if self._loaded:
            return True
        if not self.live.ready():
            return False
        for callid, data in list(self.table.items()):
            try:
                self.holds.add(str(callid), hold_read(data))
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("dropped a hold of %s that is not one: %s", callid, exc)
        self._loaded = True
        if len(self.holds):
            log.info("recovered %d channel holds", len(self.holds))
        return True

    def _forget(self, callid: str) -> None:
        self.writes.delete(callid)

    # -- authorizing -----------------------------------------------------------------------

    async def authorize(self, call: dict[str, Any]) -> str:
        """The answer to one valid call (``rating.authorize.problem`` None) as JSON text,
        decided with the requests that arrive with it."""
        if not self._load():
            raise NotReady
        request = _Request(call, asyncio.get_running_loop().create_future())
        self._queue.append(request)
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._drain())
        return await request.answer

    async def _drain(self) -> None:
        while self._queue:
            for _ in range(GATHER_TURNS):  # let the requests already read join this batch
                await asyncio.sleep(0)
            batch, self._queue = self._queue, []
            try:
                answers = self.decide([r.call for r in batch])
            except Exception as exc:  # never a 500, never a stop: each request hears of it
                log.warning("authorization failed: %s: %s", type(exc).__name__, exc)
                for r in batch:
                    if not r.answer.done():
                        r.answer.set_exception(exc)
                continue
            for r, answer in zip(batch, answers, strict=True):
                if not r.answer.done():
                    r.answer.set_result(answer)

    def decide(self, calls: list[dict[str, Any]]) -> list[str]:
        """The answers to valid calls as JSON text, in order: decided together, then held
        one by one."""
        if not self._loaded:
            raise NotReady
        self.expire()
        tables, rows = self.live.engine()
        authorizer = Authorizer.of(tables, rows)
        now = self.live.now()
        fresh = [i for i, c in enumerate(calls) if self.holds.get(c["callid"]) is None]
        decisions = decide_many(
            authorizer,
            [calls[i] for i in fresh],
            now,
            _Funds(self.live, now),
            self.live.settings.max_seconds_cap,
        )
        decided = dict(zip(fresh, decisions, strict=True))
        moment = self.monotonic()
        out = []
        for i, call in enumerate(calls):
            held = self.holds.get(call["callid"])  # held before, or by a repeat just now
            if held is not None:
                out.append(held[3])
            else:
                out.append(self._apply(authorizer, decided[i], now.timestamp(), moment))
        return out

    def _apply(self, authorizer: Authorizer, decision: Decision, now: float, moment: float) -> str:
        """The live limits, then the hold of an allowed call."""
        if decision.open_to_limits:
            limits = [
                (
                    ("customer", decision.customer_id or ""),
                    authorizer.customer_limits[decision.customer].channels,
                    authorizer.customer_limits[decision.customer].cps,
                )
            ]
            entry = None
            if decision.auth_entry >= 0:
                entry = authorizer.entry_keys[decision.auth_entry]
                limit = authorizer.entry_limits[decision.auth_entry]
                limits.append((("auth", entry), limit.channels, limit.cps))
            reached = self.holds.reached(limits, moment)
            if reached is not None:
                decision = decision.limited(reached)
            elif decision.allow:
                answer = answer_text(decision.answer())
                hold = hold_of(
                    decision.customer_id or "",
                    entry,
                    now + decision.max_seconds + HOLD_GRACE,
                    answer,
                )
                self.holds.add(decision.callid, hold)
                self.holds.allowed(hold_scopes(hold), moment)
                self.writes.set(decision.callid, hold_json(hold))
                return answer
        return answer_text(decision.answer())


class NotReady(Exception):
    """The live tables are still being recovered."""


class _Funds:
    """A customer's funds for ``rating.authorize``: the live available credit and package
    draws, read once per customer per batch."""

    def __init__(self, live: Live, now: Any) -> None:
        self.live = live
        self.now = now

    def __call__(self, customer_id: str) -> Funds:
        state = self.live.customer(customer_id)
        if state is None:
            return Funds(0)
        return Funds(
            micro_of(state.available), self.live.package_seconds_left(customer_id, self.now)
        )


# -- HTTP ------------------------------------------------------------------------------------


def _error(web: View, status: int, message: str) -> Response:
    return web.json({"error": message}, status=status)


async def _body(request: Request) -> bytes | None:
    """The request's body, or None when it is longer than ``MAX_BODY``."""
    raw: Any = request  # aiohttp's request, under faust's name
    declared = raw.content_length
    if declared is not None and declared > MAX_BODY:
        return None
    chunks: list[bytes] = []
    size = 0
    content = raw.content
    while True:
        chunk = await content.read(MAX_BODY + 1)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)


async def answer(gate: Gate, web: View, request: Request) -> Response:
    """``POST /authorize``: 200 with the decision (every deny too), 400 for a body that is
    no call, 413 for one over 64 KiB, 503 while the tables recover; never a 500."""
    try:
        body = await _body(request)
        if body is None:
            return _error(web, 413, f"the body is larger than {MAX_BODY} bytes")
        try:
            call = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(web, 400, f"the body is not JSON: {exc}")
        found = problem(call)
        if found is not None:
            return _error(web, 400, found)
        return web.text(await gate.authorize(call), content_type="application/json")
    except NotReady:
        return _error(web, 503, "the live tables are being recovered; try again")
    except Exception as exc:  # one line in the log, a JSON answer to the switch
        log.warning("POST /authorize failed: %s: %s", type(exc).__name__, exc)
        return _error(web, 503, f"authorization failed ({type(exc).__name__}); try again")


def install(live: Live) -> Gate:
    """Add ``POST /authorize``, the holds table and its hooks to the live app."""
    gate = Gate(live)
    live.on_callids.append(gate.free)
    live.values_extra.append(gate.values)
    live.app.timer(TICK, name="holds")(gate.tick)

    class Authorize(View):
        async def post(self, request: Request) -> Response:
            return await answer(gate, self, request)

    live.app.page("/authorize", name="authorize")(Authorize)
    return gate


__all__ = [
    "CPS_WINDOW",
    "HOLD_GRACE",
    "MAX_BODY",
    "Gate",
    "Hold",
    "Holds",
    "answer_text",
    "hold_json",
    "hold_of",
    "hold_read",
    "install",
]
