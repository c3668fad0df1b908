"""Preemption and long runs: a signal becomes a checkpoint and a clean exit; timed saves; a
failure on one rank ends every rank instead of leaving the others in a collective.

    SIGTERM / SIGINT / SIGUSR1 (``save_on_signals``)  ->  handler sets a flag (nothing else)
    stop point (every rank, same places)               ->  all-reduce MAX of [signal, save due,
                                                           failed] -> one decision for all ranks

The loops call :meth:`StopControl.agree` (through ``Run.stop_point`` / ``Run.after_step``) at safe
points: before each micro-batch's rollout, before the update (no weight has moved yet: the
step's work is abandoned and redone on resume) and after each optimizer step (the step is kept).
On an agreed signal every rank writes the checkpoint of the last completed step, the main process
prints one line, and :class:`Preempted` (a SystemExit) ends the process with status 128 + the
signal number (143 for SIGTERM: what SLURM / Kubernetes / torchrun treat as "terminated by the
signal", so requeue and restart policies apply). A rollout in progress is cut short by
:func:`rollout_stop_criteria` as soon as the local flag is set.

Between a stop point and the next one the RL loop runs no collective (rollout, rewards,
reference scores are per-rank). An exception there (a reward function that raises) therefore
meets the other ranks at their next stop point: the failing rank joins that all-reduce with
``failed = 1``, every rank gathers the messages and raises :class:`RankFailed` naming them,
and nobody waits for the collective timeout.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2", "SIGHUP")
DEFAULT_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")


class Preempted(SystemExit):
    """Raised on every rank once the preemption checkpoint is written; exit status
    128 + signum. ``checkpoint`` is None when no step had completed (nothing to save)."""

    def __init__(self, signum: int, step: int, checkpoint: Any) -> None:
        super().__init__(128 + int(signum))
        self.signum, self.step, self.checkpoint = int(signum), int(step), checkpoint
        self.signal_name = signal.Signals(signum).name


class RankFailed(RuntimeError):
    """An exception on some rank(s) between two stop points, reported on every rank."""


def check_signal_names(names: Sequence[str], option: str = "save_on_signals") -> None:
    for name in names:
        if name not in SIGNALS:
            raise ValueError(f"{option}: unknown signal {name!r}; choose from {list(SIGNALS)}")


def wall_clock() -> float:
    """Seconds on a monotonic clock (the timed-save clock; a test may replace it)."""
    return time.monotonic()


@dataclass
class Decision:
    signum: int = 0  # > 0: stop (the largest signal number any rank saw)
    save_due: bool = False  # save_minutes elapsed on some rank
    failed: bool = False  # some rank raised since the last stop point


class StopControl:
    """The flag a signal sets, the timed-save clock and the agreement between ranks.

    signals:      names from SIGNALS to catch; save_minutes: 0 = no timed saves
    num_processes, device: for the all-reduce (torch.distributed must be initialised when > 1)
    """

    def __init__(self, signals: Sequence[str] = DEFAULT_SIGNALS, *, save_minutes: float = 0.0,
                 num_processes: int = 1, device: Any = "cpu",
                 clock: Callable[[], float] | None = None) -> None:
        check_signal_names(signals)
        self.signals = tuple(signals)
        self.save_minutes = float(save_minutes)
        self.num_processes = int(num_processes)
        self.device = device
        self.clock = clock if clock is not None else wall_clock
        self.signum = 0  # the first signal received (0: none)
        self.received = 0  # how many (a second one during the save changes nothing)
        self.phase = "collective"  # "local": no collective runs until the next stop point
        self.last_save = self.clock()
        self._previous: dict[int, Any] = {}

    # -- signals ------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        self.received += 1
        if not self.signum:
            self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum != 0

    def install(self) -> None:
        """Catch the configured signals (main thread only; elsewhere nothing is installed)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for name in self.signals:
            number = getattr(signal, name)
            self._previous[number] = signal.signal(number, self._on_signal)

    def restore(self) -> None:
        """Put back the handlers that were there before :meth:`install`."""
        while self._previous:
            number, handler = self._previous.popitem()
            signal.signal(number, handler)

    # -- agreement ----------------------------------------------------------------------
    def saved(self) -> None:
        """A checkpoint was written: the timed-save clock restarts."""
        self.last_save = self.clock()

    def save_due(self) -> bool:
        return self.save_minutes > 0 and self.clock() - self.last_save >= 60.0 * self.save_minutes

    def agree(self, *, failed: bool = False) -> Decision:
        """All ranks call this at the same points: MAX over ranks of (signal, timed save due,
        failed). One process: this process's own values."""
        values = [self.signum, int(self.save_due()), int(failed)]
        if self.num_processes > 1:
            import torch
            import torch.distributed as dist

            tensor = torch.tensor(values, dtype=torch.int64, device=self.device)
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
            values = [int(v) for v in tensor.tolist()]
        return Decision(signum=values[0], save_due=bool(values[1]), failed=bool(values[2]))

    def failure_messages(self, message: str | None) -> list[str]:
        """Every failing rank's message (this rank's ``message`` may be None), on every rank."""
        if self.num_processes == 1:
            return [message] if message else []
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.num_processes
        dist.all_gather_object(gathered, message)
        return [f"rank {rank}: {m}" for rank, m in enumerate(gathered) if m]

    def raise_failures(self, message: str | None, cause: BaseException | None = None) -> None:
        messages = self.failure_messages(message)
        raise RankFailed("a rank failed, every rank stops:\n  " + "\n  ".join(messages)) from cause


# -- the scope a training loop runs in --------------------------------------------------
_ACTIVE: list[list[StopControl]] = []


def activate(control: StopControl) -> StopControl:
    """Install ``control``'s handlers; the innermost :func:`preemptible` call restores them when
    the loop returns or raises (``Run.finish`` restores them earlier)."""
    control.install()
    if _ACTIVE:
        _ACTIVE[-1].append(control)
    return control


@contextlib.contextmanager
def _scope() -> Iterator[list[StopControl]]:
    controls: list[StopControl] = []
    _ACTIVE.append(controls)
    try:
        yield controls
    finally:
        _ACTIVE.pop()
        for control in controls:
            control.restore()


def preemptible(loop: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for a training loop: signal handlers are restored however it ends, and an
    exception raised while no collective runs (``phase == "local"``) is shared with the other
    ranks at their next stop point (:class:`RankFailed` on every rank)."""

    @functools.wraps(loop)
    def run(*args: Any, **kwargs: Any) -> Any:
        with _scope() as controls:
            try:
                return loop(*args, **kwargs)
            except (Preempted, RankFailed):
                raise
            except BaseException as exc:
                control = controls[-1] if controls else None
                if control is not None and control.num_processes > 1 and control.phase == "local":
                    control.agree(failed=True)
                    control.raise_failures(f"{type(exc).__name__}: {exc}", exc)
                raise

    return run


def ignore_while_exiting(exc: Preempted) -> None:
    """For a process that ends with ``exc`` (the command line): ignore the stop signals from
    here on. torchrun sends SIGTERM to every other worker as soon as one exits, and one that
    arrived during the interpreter's shutdown killed that worker with -15 instead of letting it
    exit with 128 + signum like the rank that exited first (its checkpoint was already written;
    a launcher that gets no exit goes on to SIGKILL after its grace period). SIGINT keeps its
    default: a person's Ctrl-C still ends a shutdown that hangs."""
    if threading.current_thread() is threading.main_thread():
        for name in SIGNALS:
            if name != "SIGINT":
                signal.signal(getattr(signal, name), signal.SIG_IGN)
    sys.stderr.flush()


def announce(line: str, enabled: bool = True) -> None:
    """The one line a preempted run prints (stderr, flushed: the process exits right after)."""
    if enabled:
        print(f"[stepgrpo] {line}", file=sys.stderr, flush=True)


def rollout_stop_criteria(control: StopControl) -> list[Any]:
    """A transformers StoppingCriteria that ends ``generate`` at the next token once this rank's
    flag is set (the rollout is abandoned at the next stop point anyway)."""
    import torch
    from transformers import StoppingCriteria

    class StopOnSignal(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):  # [N, T] -> [N] bool
            return torch.full((input_ids.shape[0],), control.requested, dtype=torch.bool,
                              device=input_ids.device)

    return [StopOnSignal()]
