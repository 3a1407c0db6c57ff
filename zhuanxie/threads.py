"""How the pipeline's threads share PyTorch's native thread pools on a CPU.

PyTorch's CPU kernels run on OpenMP (GNU libgomp in the official wheels), and libgomp keeps one
pool of worker threads per thread that starts parallel work. Once the process holds more pool
threads than it has cores, libgomp stops letting idle workers spin between parallel regions and
puts them to sleep instead (its "throttled" spin count), and every one of the model's thousands
of small regions then pays a futex wake-up. Measured here (2 cores, full-size SeACo-Paraformer,
int8): the same batches took 3.6-4.9 s when decoded by the thread that had loaded the model and
5.7-7.4 s when decoded by a second thread, because the loading thread's pool counted too.

So the engine decodes in the thread that collects the results (usually the caller's, which
already owns a pool), and its helper threads (decoding audio, VAD, features) call
``serial_native_threads`` so their small tensor work never starts a pool of its own.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger("zhuanxie.threads")


@functools.cache
def _native_setters() -> list[Callable[[int], object]]:
    """libgomp's and MKL's per-thread thread-count setters, where this torch build has them."""
    lib = Path(torch.__file__).parent / "lib"
    found: list[Callable[[int], object]] = []
    for library, symbol in (
        (lib / "libgomp.so.1", "omp_set_num_threads"),
        # The C entry point: the lower-case name is the Fortran one, which takes a pointer.
        (lib / "libtorch_cpu.so", "MKL_Set_Num_Threads_Local"),
    ):
        try:
            found.append(getattr(ctypes.CDLL(str(library)), symbol))
        except (OSError, AttributeError):
            log.debug("no %s in %s", symbol, library)
    return found


def serial_native_threads() -> None:
    """Make PyTorch run this thread's kernels serially, without touching other threads.

    ``torch.set_num_threads`` cannot do this: it also changes the count every thread starts
    with, and MKL's global count, which would throttle the model. The per-thread setters of
    OpenMP and MKL can, once PyTorch has made its own per-thread set-up (done lazily, on the
    thread's first call to ``torch.get_num_threads``). A no-op where the libraries are absent
    (builds with other OpenMP runtimes).
    """
    torch.get_num_threads()
    for setter in _native_setters():
        setter(1)
