"""Whose turn it is to fit a model: the one way ``Model.fit`` waits for another fit.

Two threads fitting one model take turns, a whole fit each (a fit's state lives in
the Rust model from its first epoch to its last). Waiting for a turn while holding
another model's turn can close a circle: thread 1 fits A and, from one of A's
callbacks, fits B, while thread 2 fits B and, from one of B's callbacks, fits A.
With plain locks both wait forever. Here every wait goes through one registry of
who holds which model and who waits for which, so the thread whose wait would close
a circle is refused at once with a RuntimeError that names the circle; the other
thread's fit then goes on and completes. The same rule refuses a thread that asks
for a model it is already fitting (a fit from the model's own callback).

The registry's lock is only ever held for a few dictionary operations, never while
training or while waiting (``Condition.wait`` releases it), and waits wake at least
every half second, so Ctrl-C reaches a waiting main thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["fit_turn"]

_changed = threading.Condition()
_holder: dict[int, int] = {}  # id(model) -> thread ident fitting it
_waiting_for: dict[int, int] = {}  # thread ident -> id(model) it waits to fit


def _circle(model: int, me: int) -> list[int] | None:
    """The threads of the circle my wait for ``model`` would close, or None."""
    chain: list[int] = []
    thread = _holder.get(model)
    while thread is not None and thread not in chain:
        if thread == me:
            return chain
        chain.append(thread)
        wanted = _waiting_for.get(thread)
        thread = None if wanted is None else _holder.get(wanted)
    return None


@contextmanager
def fit_turn(model: object) -> Iterator[None]:
    """Holds ``model``'s fitting turn for the block, waiting for it if another thread
    has it, unless that wait could never end (RuntimeError)."""
    key, me = id(model), threading.get_ident()
    with _changed:
        while key in _holder:
            if _holder[key] == me:
                raise RuntimeError(
                    "fit was called on a model that this thread is already fitting "
                    "(from a callback?); fit another model, or fit after this fit returns"
                )
            circle = _circle(key, me)
            if circle is not None:
                raise RuntimeError(
                    "fit would wait forever: the model is being fitted by another thread "
                    f"({len(circle)} thread(s) in the circle), which is itself waiting for "
                    "a model this thread is fitting (fits started from callbacks of each "
                    "other's models); fit it after this fit returns"
                )
            _waiting_for[me] = key
            try:
                _changed.wait(timeout=0.5)
            finally:
                del _waiting_for[me]
        _holder[key] = me
    try:
        yield
    finally:
        with _changed:
            del _holder[key]
            _changed.notify_all()
