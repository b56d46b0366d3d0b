"""One generation at a time: a single worker thread runs jobs from a bounded queue.

The compute runs in C++ with the GIL released, so the event loop keeps serving HTTP while the worker
denoises. A full queue is refused at once (HTTP 503) instead of letting memory and latency grow with
load. A job reports events to its request through an asyncio queue; a client that goes away cancels
its job (the generation stops at the next step).
"""

from __future__ import annotations

import asyncio
import queue
import threading


class QueueFullError(Exception):
    """The scheduler already holds its maximum number of waiting jobs."""


class Job:
    """A unit of work: `fn(job)` runs on the worker; it calls job.emit(event) for each event and
    checks job.cancelled. Its return value (or exception) ends the event stream."""

    _END = object()

    def __init__(self, fn, loop: asyncio.AbstractEventLoop):
        self.fn = fn
        self.cancelled = threading.Event()
        self._loop = loop
        self._events: asyncio.Queue = asyncio.Queue()

    def emit(self, event):
        self._loop.call_soon_threadsafe(self._events.put_nowait, ("event", event))

    def _finish(self, kind, value):
        self._loop.call_soon_threadsafe(self._events.put_nowait, (kind, value))

    def cancel(self):
        self.cancelled.set()

    async def next(self):
        """('event', e) | ('result', value) | ('error', exception)."""
        return await self._events.get()


class Scheduler:
    def __init__(self, max_queue: int = 16):
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._work, name="diffrt-generate", daemon=True)
        self._stopping = False
        self._thread.start()

    def submit(self, fn) -> Job:
        """Queue `fn`; raises QueueFullError when the queue is full. Call from the event loop."""
        job = Job(fn, asyncio.get_running_loop())
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFullError(f"server busy: {self._queue.maxsize} requests already waiting; retry later") from None
        return job

    def _work(self):
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.cancelled.is_set():
                job._finish("error", asyncio.CancelledError())
                continue
            try:
                job._finish("result", job.fn(job))
            except BaseException as e:  # the request turns it into an HTTP error
                job._finish("error", e)

    def close(self):
        if not self._stopping:
            self._stopping = True
            self._queue.put(None)  # blocks only while the queue is full; the worker drains it
            self._thread.join(timeout=30)
