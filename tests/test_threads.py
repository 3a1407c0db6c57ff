"""Per-thread PyTorch thread counts: a helper thread can go serial without slowing the model."""

from __future__ import annotations

import threading

import torch

from zhuanxie.threads import serial_native_threads


def in_new_thread(body: object) -> list[int]:
    seen: list[int] = []

    def run() -> None:
        if callable(body):
            body()
        seen.append(torch.get_num_threads())

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return seen


def test_a_serial_thread_runs_one_thread() -> None:
    assert in_new_thread(serial_native_threads) == [1]


def test_other_threads_keep_their_count() -> None:
    this_thread, new_threads = torch.get_num_threads(), in_new_thread(None)
    in_new_thread(serial_native_threads)
    assert torch.get_num_threads() == this_thread
    assert in_new_thread(None) == new_threads  # what torch.set_num_threads(1) would change


def test_a_serial_thread_still_computes_exactly() -> None:
    a, b = torch.randn(300, 400), torch.randn(400, 500)
    out: list[torch.Tensor] = []
    in_new_thread(lambda: (serial_native_threads(), out.append(a @ b)))
    torch.testing.assert_close(out[0], a @ b)
