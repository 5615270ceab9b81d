import logging

import pytest

knobs = pytest.importorskip("triton").knobs
from lmforge_torch_triton import compile_watch  # noqa: E402


@pytest.fixture
def clean_hooks():
    runtime = knobs.runtime
    saved = runtime.jit_cache_hook, runtime.jit_post_compile_hook
    runtime.jit_cache_hook = runtime.jit_post_compile_hook = None
    yield runtime
    runtime.jit_cache_hook, runtime.jit_post_compile_hook = saved


def test_compiles_after_warm_up_are_logged_and_counted(clean_hooks, caplog):
    assert compile_watch.watch_compiles()
    assert compile_watch.watch_compiles()  # once per process
    before = compile_watch.compiles_after_warm_up
    with caplog.at_level(logging.INFO, logger=compile_watch.__name__):
        # Triton calls the hooks with keyword arguments; False means "compile as usual".
        assert clean_hooks.jit_cache_hook(repr="kernel[num_warps=4](n: i32)", key=1) is False
        assert clean_hooks.jit_post_compile_hook(repr="kernel[num_warps=4](n: i32)", key=1) is False
    assert compile_watch.compiles_after_warm_up == before + 1
    assert "kernel[num_warps=4](n: i32)" in caplog.text


def test_another_hook_is_left_alone(clean_hooks):
    def theirs(**kwargs):
        return False

    clean_hooks.jit_post_compile_hook = theirs
    assert not compile_watch.watch_compiles()
    assert clean_hooks.jit_post_compile_hook is theirs and clean_hooks.jit_cache_hook is None
