"""gunicorn's arbiter, carrying out the controller's requests
(server/contract/control.py) in its main loop.

It keeps the books a roll needs that gunicorn does not: which workers it
retired (they drain), and which it forked ahead of their release (*held*:
forked, in their cgroup, waiting for the word to load what ``current``
points to, while the controller still builds). gunicorn's worker count
(``num_workers``) is the number of workers that *serve*: neither a drain
that ends nor a held worker that comes or goes makes the master spawn or
stop one (gunicorn's own accounting counts every child: it would stop the
oldest, serving, workers for the held ones).
"""
from __future__ import annotations

import logging
import os
import signal

from gunicorn.arbiter import Arbiter

from . import smoke

log = logging.getLogger("hotplate")


class HotplateArbiter(Arbiter):
    """gunicorn's arbiter, spawning the workers it lacks at once.

    gunicorn sleeps up to 100 ms after each fork, to spread a cold start;
    it does that in its main loop, so a roll waited on it twice: for each
    new worker but the first, and for the old ones' retirement, which the
    same loop carries out (issue 23). A roll's workers boot side by side
    instead, on a master that has imported everything already."""

    def __init__(self, app):
        super().__init__(app)
        self.retiring: set[int] = set()  # told to stop: they drain
        self.held: dict[int, int] = {}  # forked ahead: pid -> the pipe their word comes through
        self.cancelled: set[int] = set()  # held, then told to go away
        self.holding: tuple[int, int] | None = None  # (in the fork of a held worker: its pipe)
        self.refresh_asked: int | None = None  # a fresh generation of this many, asked from another thread

    def serving(self) -> list[int]:
        """The workers that serve, oldest first: not retiring, not held."""
        return [pid for pid in self.by_age() if pid not in self.retiring and pid not in self.held
                and pid not in self.cancelled]

    def spawn_workers(self) -> None:
        for _ in range(self.num_workers - len(self.serving())):
            self.spawn_worker()

    def manage_workers(self) -> None:
        """The controller's requests, then gunicorn's job by this
        accounting: spawn the serving workers lacking, retire the oldest
        past the count."""
        listener = self.app.listener
        for request in listener.requests() if listener is not None else ():
            try:
                self.carry_out(request)
            except Exception:  # the master must survive any request
                log.exception("control: %r failed", request.message.get("op"))
            finally:
                request.close()
        if self.refresh_asked is not None:
            self.refresh()
        self.spawn_workers()
        self.retire(self.num_workers)

    def by_age(self) -> list[int]:
        return [pid for pid, _ in sorted(self.WORKERS.items(), key=lambda w: w[1].age)]

    def carry_out(self, request) -> None:
        """One request of the controller's: answered before it is closed."""
        message = request.message
        op = message.get("op")
        if op == "workers":
            request.answer({"workers": self.by_age()})
        elif op in ("spawn", "hold"):
            before = self.by_age()
            for _ in range(int(message["n"])):
                self.spawn_held() if op == "hold" else self.spawn_one()
            request.answer({"before": before})  # (after the forks: they would only slow what the controller does)
        elif op == "go":
            going = self.release_held(b"g")
            self.num_workers += len(going)  # (serving now, beside the old ones until they retire)
            request.answer({"going": going})
        elif op == "cancel":
            request.answer({"cancelled": self.release_held(b"")})
        elif op == "retire":
            keep = {int(p) for p in message["keep"]}
            going = self.stop_workers([pid for pid in self.serving() if pid not in keep])  # (whatever their age)
            self.num_workers = len(self.serving())
            request.answer({"retiring": going})
        elif op == "check" and request.fds:
            self.fork_check(request, request.fds[0], str(message.get("state", "")), float(message["timeout"]))
        else:
            request.answer({"error": f"unknown request {op!r}"})

    def spawn_one(self) -> int:
        self.num_workers += 1
        return self.spawn_worker()

    def spawn_held(self) -> None:
        """A worker forked ahead: it waits in post_fork (server/gunicorn_app.py) for its word."""
        go_r, go_w = self.holding = os.pipe()
        try:
            pid = self.spawn_worker()  # (in the fork it never returns, nor may anything here run there)
        except OSError:
            self.holding = None
            os.close(go_r)
            os.close(go_w)
            raise
        self.holding = None
        os.close(go_r)
        self.held[pid] = go_w

    def release_held(self, word: bytes) -> list[int]:
        """Tell every held worker to go (b"g"): load the release; or, with
        no word (its pipe closed), to exit without loading anything. The
        workers told (one that died meanwhile is not: the roll forks
        another)."""
        told = []
        while self.held:
            pid, go_w = self.held.popitem()
            try:
                if word:
                    os.write(go_w, word)
                told.append(pid)
            except OSError:  # (it is gone: its end of the pipe closed)
                pass
            finally:
                os.close(go_w)
            if not word:
                self.cancelled.add(pid)
        return told

    def retire(self, keep: int) -> list[int]:
        """Stop every serving worker but the newest ``keep``."""
        serving = self.serving()
        return self.stop_workers(serving[:max(0, len(serving) - keep)])

    def stop_workers(self, pids: list[int]) -> list[int]:
        """Stop these workers gracefully: they finish their requests and exit."""
        for pid in pids:
            self.retiring.add(pid)
            self.kill_worker(pid, signal.SIGTERM)
        return pids

    def gone(self, pid: int) -> None:
        """A worker has exited (reaped): off the books."""
        self.retiring.discard(pid)
        self.cancelled.discard(pid)
        go_w = self.held.pop(pid, None)
        if go_w is not None:
            os.close(go_w)

    def ask_refresh(self, workers: int) -> None:
        """From another thread (the fence): a fresh generation of
        ``workers`` on what ``current`` points to, in the main loop."""
        self.refresh_asked = workers
        self.wakeup()

    def refresh(self) -> None:
        """gunicorn's reload (new workers first), without held workers,
        which it would wait for as it waits for the old ones."""
        self.release_held(b"")
        self.num_workers, self.refresh_asked = self.refresh_asked, None
        os.kill(self.pid, signal.SIGHUP)

    def forget_held(self) -> None:
        """In a forked child: the held workers' pipes are the master's to write."""
        while self.held:
            try:
                os.close(self.held.popitem()[1])
            except OSError:
                pass

    def fork_check(self, request, answer_fd: int, state: str, timeout: float) -> None:
        """Fork the smoke check's keeper (server/smoke.py): a fork of a
        master that has the runtime loaded, not a new interpreter. It
        takes none of the master's descriptors but the request's and the
        log's: not the app's listening sockets, not this line."""
        pid = os.fork()
        if pid != 0:
            return
        try:
            for s in self.LISTENERS:
                s.close()
            for worker in self.WORKERS.values():
                worker.tmp.close()
            self.forget_held()
            self.app.forget()
            for sig in (*self.SIGNALS, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            request.fds = []  # (the keeper passes it on)
            smoke.keep(request.conn, answer_fd, state, timeout)
        except BaseException:
            log.exception("the smoke check's keeper failed")
        finally:
            os._exit(0)
