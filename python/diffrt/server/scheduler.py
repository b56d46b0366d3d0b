"""The generation worker: one thread that denoises concurrent requests together (canvas-level batching)
and runs the other model jobs (load, unload) in between.

Generation requests of a model share one _core.BatchEngine of `parallel` slots, allocated when the
model is first used (so memory does not grow with load): each tick runs one denoising step of every
active request, each with its own parameters, prompt length and seed; a request joins when a slot is
free, at its own first canvas, and leaves when its text is complete. Its output equals what it gives
alone with the same seed (the random draws are keyed by the request, not by its slot).

Waiting requests sit in a bounded queue; a full queue is refused at once (HTTP 503) instead of
letting memory and latency grow with load. The compute runs in C++ with the GIL released, so the
event loop keeps serving HTTP while the worker denoises. A job reports events to its request through
an asyncio queue; a client that goes away cancels its job (its slot is freed at the next tick).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import queue
import threading
import time

log = logging.getLogger("diffrt.server")
DEFAULT_PARALLEL = 4
DEFAULT_MAX_CONTEXT = 8192  # per slot; the model's own context if smaller


class QueueFullError(Exception):
    """The scheduler already holds its maximum number of waiting jobs."""


class Job:
    """A unit of work: `fn(job)` runs on the worker (or, for a generation, `gen` = (registry,
    prepared request) runs in the batch engine); it calls job.emit(event) for each event and checks
    job.cancelled. Its return value (or exception) ends the event stream."""

    def __init__(self, fn, loop: asyncio.AbstractEventLoop, gen=None):
        self.fn = fn
        self.gen = gen
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


@dataclasses.dataclass
class _Running:
    """A generation in a slot: its text so far and what its Outcome needs."""

    job: Job
    registry: object
    prep: object
    engine: object
    rid: int
    tokenizer: object
    text: object  # generation.TextStream
    pad_id: int | None
    t0: float
    load_s: float
    steps: int = 0
    ended: bool = False


class _Engine:
    """A model's batch engine and the generation front end used to resolve request parameters."""

    def __init__(self, model, slots, max_context):
        from .. import _core
        from ..generate import Generator

        self.model = model
        self.generator = Generator(model)
        ctx = self.generator.context_length or max_context
        if getattr(model, "device", "cpu") == "cuda":  # the same engine, stepping on the GPU
            from ..cuda import batch_engine

            self.engine = batch_engine(model, slots, min(ctx, max_context))
        else:
            self.engine = _core.BatchEngine(model.engine, slots, min(ctx, max_context))

    def full(self) -> bool:
        return self.engine.active + self.engine.queued >= self.engine.slots


_STOP = object()


class Scheduler:
    def __init__(self, max_queue: int = 16, parallel: int = DEFAULT_PARALLEL,
                 max_context: int = DEFAULT_MAX_CONTEXT):
        if parallel < 1:
            raise ValueError(f"parallel must be >= 1 (got {parallel})")
        self.parallel, self.max_context = parallel, max_context
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._engines: dict[int, _Engine] = {}  # id(model) -> its engine
        self._running: dict[tuple[int, int], _Running] = {}  # (id(engine), request id) -> state
        self._registries: set = set()  # the registries of the requests seen (one per app)
        # Jobs taken from the queue that wait for a free slot of their model, oldest first. Each model
        # waits on its own: a job for a model with free slots starts at once, whatever waits before it
        # for another model. At most max_queue of them (then the queue itself holds the rest).
        self._held: list = []
        self._stopping = False
        self.peak_batch = 0  # most generations in flight at once (for tests and the benchmark)
        self._thread = threading.Thread(target=self._work, name="diffrt-generate", daemon=True)
        self._thread.start()

    # --- the event loop side -----------------------------------------------------------------
    def submit(self, fn) -> Job:
        """Queue `fn`; raises QueueFullError when the queue is full. Call from the event loop."""
        return self._put(Job(fn, asyncio.get_running_loop()))

    def submit_generation(self, registry, prep) -> Job:
        """Queue a generation (a generation.Prepared) for the batch engine of its model. Events:
        ("text", delta), ("draft", text) when prep.drafts; result: a generation.Outcome."""
        return self._put(Job(None, asyncio.get_running_loop(), gen=(registry, prep)))

    def _put(self, job):
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFullError(f"server busy: {self._queue.maxsize} requests already waiting; retry later") from None
        return job

    def close(self):
        if not self._stopping:
            self._stopping = True
            self._queue.put(_STOP)  # blocks only while the queue is full; the worker drains it
            self._thread.join(timeout=30)

    # --- the worker ---------------------------------------------------------------------------
    def _work(self):
        while True:
            # Held jobs first (a slot of their model may have freed), in arrival order ...
            self._held = [job for job in self._held if not self._start(job)]
            # ... then new ones while there is room to hold them; block only when nothing is denoised.
            while len(self._held) < self._queue.maxsize:
                idle = not self._running  # held jobs then retry at least every second
                try:
                    job = self._queue.get(block=idle, timeout=1.0 if idle else None)
                except queue.Empty:
                    break
                if job is _STOP:
                    for run in list(self._running.values()):
                        self._end(run, error=asyncio.CancelledError(), slot_free=True)
                    for held in self._held:
                        held._finish("error", asyncio.CancelledError())
                    return
                if not self._start(job):
                    self._held.append(job)  # its model has no free slot yet
            if self._running:
                self.peak_batch = max(self.peak_batch, len(self._running))
                self._tick()
            else:
                self._prune()

    def _start(self, job) -> bool:
        """Start a job; False when its model's slots are all taken."""
        if job.cancelled.is_set():
            job._finish("error", asyncio.CancelledError())
            return True
        if job.gen is None:
            try:
                job._finish("result", job.fn(job))
            except BaseException as e:  # the request turns it into an HTTP error
                job._finish("error", e)
            return True
        registry, prep = job.gen
        self._registries.add(registry)
        waiting = getattr(job, "waits_for", None)
        if waiting is not None and waiting.full() and self._engines.get(id(waiting.model)) is waiting:
            return False  # still no free slot: no need to touch the registry again
        try:
            t0 = time.monotonic()
            model = registry.acquire(prep.ref)
        except BaseException as e:
            job._finish("error", e)
            return True
        try:
            if not hasattr(model, "engine"):  # a model without the C++ engine: one at a time
                registry.release(prep.ref, prep.keep_alive)
                from . import generation as gen

                job._finish("result", gen.run(job, registry, prep))
                return True
            eng = self._engines.get(id(model))
            if eng is None or eng.model is not model:
                eng = self._engines[id(model)] = _Engine(model, self.parallel, self.max_context)
            if eng.full():
                registry.release(prep.ref, prep.keep_alive)
                job.waits_for = eng
                return False
            self._submit(job, registry, prep, model, eng, t0)
        except BaseException as e:
            registry.release(prep.ref, prep.keep_alive)
            job._finish("error", e)
        return True

    def _submit(self, job, registry, prep, model, eng, t0):
        from . import generation as gen

        _, _, p, _ = eng.generator.prepare(prep.prompt_ids, **prep.generate_kwargs())
        rid = eng.engine.submit(
            prep.prompt_ids, max_new_tokens=p["max_new_tokens"], steps=p["steps"], t_min=p["t_min"],
            t_max=p["t_max"], entropy_bound=p["entropy_bound"], stability_threshold=p["stability_threshold"],
            confidence_threshold=p["confidence_threshold"], eos_ids=p["eos_ids"],
            pad_id=-1 if p["pad_id"] is None else p["pad_id"], seed=p["seed"], want_steps=bool(prep.drafts))
        ts = gen.TextStream(prep.ref.tokenizer, prep.params.get("stop") or [], prep.ref.eos_ids,
                            prep.max_new_tokens)
        self._running[(id(eng.engine), rid)] = _Running(job, registry, prep, eng.engine, rid, prep.ref.tokenizer,
                                                        ts, p["pad_id"], t0, time.monotonic() - t0)

    def _tick(self):
        """One denoising step of every engine with work; events go to their jobs."""
        for run in self._running.values():
            if run.job.cancelled.is_set() and not run.ended:
                run.engine.cancel(run.rid)
        for eng in list(self._engines.values()):
            e = eng.engine
            if e.idle:
                continue
            try:
                events = e.step(1)
            except BaseException as exc:  # an engine failure ends its requests, not the server
                log.exception("batch engine failed")
                for run in [r for r in self._running.values() if r.engine is e]:
                    self._end(run, error=exc, slot_free=True)
                self._engines.pop(id(eng.model), None)
                continue
            for kind, rid, canvas, step, tokens, done, cancelled in events:
                run = self._running.get((id(e), rid))
                if run is None:
                    continue
                try:
                    self._dispatch(run, kind, step, tokens, cancelled)
                except BaseException as exc:  # e.g. a tokenizer failure: this request only
                    log.exception("generation failed")
                    self._end(run, error=exc)

    def _dispatch(self, run: _Running, kind, step, tokens, cancelled):
        if kind == "done":
            self._end(run, cancelled=cancelled, slot_free=True)
        elif run.ended:
            return
        elif kind == "step":
            run.job.emit(("draft", run.tokenizer.decode(tokens)))
        else:
            run.steps += step
            delta = run.text.push([t for t in tokens if run.pad_id is None or t != run.pad_id])
            if delta:
                run.job.emit(("text", delta))
            if run.text.done_reason:  # a stop string or num_predict: the text is complete
                self._end(run)

    def _end(self, run: _Running, cancelled=False, error=None, slot_free=False):
        """Finish a request's job (once). slot_free: the engine is done with it (its Done event);
        otherwise its engine request is cancelled, which frees the slot at the next tick."""
        if slot_free:
            self._running.pop((id(run.engine), run.rid), None)
        elif not run.ended:
            run.engine.cancel(run.rid)
        if run.ended:
            return
        run.ended = True
        from . import generation as gen

        try:
            if error is not None:
                run.job._finish("error", error)
                return
            if cancelled or run.job.cancelled.is_set():
                run.text.done_reason = run.text.done_reason or "cancelled"
            delta = run.text.finish()
            if delta:
                run.job.emit(("text", delta))
            run.job._finish("result", gen.Outcome(run.text.text, len(run.text.ids) + run.text.n_eos,
                                                  run.text.done_reason, len(run.prep.prompt_ids), run.load_s,
                                                  time.monotonic() - run.t0, run.steps))
        finally:
            run.registry.release(run.prep.ref, run.prep.keep_alive)

    def _prune(self):
        """Drop the engines (their sessions' memory) of models the registries no longer hold."""
        for key, eng in list(self._engines.items()):
            if eng.engine.idle and not any(l.model is eng.model for reg in self._registries for l in reg.loaded()):
                del self._engines[key]
