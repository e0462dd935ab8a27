"""SIGTERM / SIGINT (Ctrl-C): finish the current step, write a checkpoint, exit with
EXIT_PREEMPTED; a second signal before that stops at once (KeyboardInterrupt)."""

from __future__ import annotations

import signal

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again later" - resume with resume=<run dir>


class Preempted(SystemExit):
    """The run stopped on signal ``signum`` after step ``step``, its checkpoint written (the
    exit code is EXIT_PREEMPTED; the command's wrapper prints how to resume)."""

    def __init__(self, signum: int | None, step: int, checkpoint: object = None) -> None:
        super().__init__(EXIT_PREEMPTED)
        self.signum, self.step, self.checkpoint = signum, step, checkpoint


class StopFlag:
    """Installs handlers that only set a flag; the training loop checks it between steps."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no handlers, no pre-emption support
                pass
        return self

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        if self.signal is not None:  # the second Ctrl-C: no waiting for the step and its checkpoint
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    @property
    def stop(self) -> bool:
        return self.signal is not None
