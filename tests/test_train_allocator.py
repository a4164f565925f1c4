"""train/allocator.py: inside keep_freed_memory the big tensors of a training-step-like pattern
(made, used, all freed, again) reuse their pages: no page faults after the first steps and no
growth of the resident set (faults are counted by the kernel: deterministic). Outside it glibc
maps and unmaps them every step; its defaults come back on leaving."""

from __future__ import annotations

import resource
import sys

import pytest
import torch

from llmcycle.train.allocator import _libc, keep_freed_memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or _libc() is None, reason="glibc only")
PAGES = 3 * 40 * 2**20 // resource.getpagesize()  # one step's big tensors, in pages


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _step() -> None:
    """Three 40 MiB activations (over glibc's 32 MiB mmap ceiling), a result, everything freed."""
    xs = [torch.empty(10 * 2**20).fill_(1.0) for _ in range(3)]
    y = xs[0] + xs[1]
    del xs
    y.sum()


def _faults_of_steps(n: int) -> tuple[int, int]:
    before, rss = _faults(), _rss()
    for _ in range(n):
        _step()
    return _faults() - before, _rss() - rss


def test_freed_memory_is_reused_without_page_faults():
    assert _faults_of_steps(3)[0] > 3 * PAGES // 2  # glibc's default: mmap, touch, munmap every step
    with keep_freed_memory() as active:
        assert active
        _faults_of_steps(3)  # the heap grows to the step's size
        # once grown, a window of 5 steps faults nothing; on some machines the heap settles a window
        # later (seen once in a full suite: one window with two tensors' worth), so up to 3 windows
        windows = [_faults_of_steps(5) for _ in range(3)]
        assert any(f < PAGES // 20 and g < 2**20 for f, g in windows), windows
        assert windows[-1][0] < PAGES // 20, windows  # and it stays settled
    assert _faults_of_steps(3)[0] > PAGES // 2  # defaults restored on leaving: faults again


def test_disabled_is_a_no_op():
    with keep_freed_memory(enabled=False) as active:
        assert not active
        assert _faults_of_steps(3)[0] > PAGES // 2  # still faulting (glibc's heap may serve part of it)
