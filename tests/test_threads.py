"""A model used from several threads: no deadlock, no half-applied step.

Each scenario runs in a child interpreter with a timeout, so a regression
(a deadlock of the GIL against the model's lock) fails the test instead of
hanging the test run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

PRELUDE = """
import threading, time
import numpy as np
import cnnrs
(x, y), _ = cnnrs.datasets.load_digits()
x, y = x[:512], y[:512]
"""


def run_child(body: str, timeout: float = 120) -> str:
    code = PRELUDE + textwrap.dedent(body)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_properties_read_while_another_thread_fits_return_at_once():
    out = run_child(
        """
        model = cnnrs.Model("custom", seed=0, device="cpu")
        t = threading.Thread(target=model.fit, args=(x, y), kwargs={"epochs": 6, "verbose": 0})
        t.start()
        deadline = time.monotonic() + 60
        while model.input_shape is None and time.monotonic() < deadline:
            time.sleep(0.001)
        slowest = 0.0
        reads = 0
        while t.is_alive():
            start = time.monotonic()
            info = (model.input_shape, model.num_classes, repr(model), model.layer_specs,
                    model.normalization, model.class_names, model.learning_rate, model.device,
                    model.architecture, model.count_params())
            slowest = max(slowest, time.monotonic() - start)
            reads += 1
        t.join()
        assert info[0] == (8, 8, 1) and info[1] == 10, info
        print("reads", reads, "slowest", slowest)
        assert reads > 10 and slowest < 1.0, (reads, slowest)
        """
    )
    assert "reads" in out


def test_a_progress_printer_may_read_the_model_but_not_reenter_it():
    out = run_child(
        """
        model = cnnrs.Model("custom", seed=0, device="cpu")
        seen, refused = [], []

        class Printer:
            def batch(self, *args):
                seen.append(model.input_shape)
                try:
                    model.predict(x[:4])
                except RuntimeError as e:
                    refused.append(str(e))

            def epoch_end(self, *args):
                seen.append(model.num_classes)

        model.fit(x, y, epochs=1, progress=Printer())
        assert seen and all(s is not None for s in seen), seen[:3]
        assert refused and "inside this model's own fit" in refused[0], refused[:1]
        # The model is still usable afterwards.
        assert model.predict(x[:4]).shape == (4, 10)
        print("ok")
        """
    )
    assert "ok" in out


def test_two_threads_fitting_one_model_take_turns():
    out = run_child(
        """
        model = cnnrs.Model("custom", seed=0, device="cpu")
        histories, errors = [], []

        def fit():
            try:
                histories.append(model.fit(x, y, epochs=2, verbose=0))
            except Exception as e:
                errors.append(e)

        threads = [threading.Thread(target=fit) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert not any(t.is_alive() for t in threads), "a fit never finished"
        assert not errors, errors
        assert len(histories) == 2 and all(len(h["loss"]) == 2 for h in histories)
        print("ok")
        """
    )
    assert "ok" in out


def test_same_seed_same_history_while_another_model_trains():
    out = run_child(
        """
        def history():
            return cnnrs.Model("with_dropout_0.2" if False else "custom", seed=3, device="cpu").fit(
                x, y, epochs=2, verbose=0)

        alone = history()
        stop = threading.Event()

        def noise():
            other = cnnrs.Model("custom", seed=99, device="cpu")
            while not stop.is_set():
                other.fit(x[:128], y[:128], epochs=1, verbose=0)

        t = threading.Thread(target=noise)
        t.start()
        try:
            together = history()
        finally:
            stop.set()
            t.join()
        assert together == alone, (together, alone)
        print("ok")
        """,
        timeout=240,
    )
    assert "ok" in out


def test_ctrl_c_still_works_while_a_reader_thread_polls():
    out = run_child(
        """
        import _thread
        model = cnnrs.Model("custom", seed=0, device="cpu")
        polling = threading.Event()

        def poll():
            polling.set()
            while True:
                model.input_shape
                time.sleep(0.001)

        threading.Thread(target=poll, daemon=True).start()
        polling.wait()
        threading.Timer(1.0, _thread.interrupt_main).start()
        try:
            model.fit(x, y, epochs=1000, verbose=0)
        except KeyboardInterrupt:
            print("interrupted")
        assert model.predict(x[:2]).shape == (2, 10)
        """
    )
    assert "interrupted" in out


def test_cross_model_fits_from_callbacks_in_two_threads_never_hang():
    """Thread 1 fits A and, from A's callback, fits B; thread 2 fits B and, from B's
    callback, fits A. With a lock per model both waited forever; now the thread whose
    wait would close the circle is refused at once and the other completes."""
    out = run_child(
        """
        from cnnrs.callbacks import Callback
        a = cnnrs.Model("custom", seed=0, device="cpu")
        b = cnnrs.Model("custom", seed=1, device="cpu")
        both_inside = threading.Barrier(2, timeout=30)
        results = {}

        class FitOther(Callback):
            def __init__(self, other):
                super().__init__()
                self.other = other
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 0:
                    both_inside.wait()  # both outer fits are running
                    self.other.fit(x[:64], y[:64], epochs=1, verbose=0)

        def run(name, model, other):
            try:
                model.fit(x, y, epochs=2, verbose=0, callbacks=[FitOther(other)])
                results[name] = "done"
            except RuntimeError as e:
                results[name] = str(e)

        threads = [threading.Thread(target=run, args=("A", a, b)),
                   threading.Thread(target=run, args=("B", b, a))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads), "hung"
        outcomes = sorted(results.values())
        assert outcomes[0] == "done", results
        assert "fit would wait forever" in outcomes[1], results
        # Both models are usable afterwards, and a plain fit of each works.
        for m in (a, b):
            m.fit(x[:64], y[:64], epochs=1, verbose=0)
            assert m.predict(x[:4]).shape == (4, 10)
        print("outcomes", outcomes)
        """,
        timeout=180,
    )
    assert "outcomes" in out
