"""Targets for tests/test_isolated.py: spawned processes import them by module name, so they live outside the test
module (pytest imports test modules by path)."""
import os


def put_square(x, queue):
    queue.put(x * x)


def die(code, queue):
    os._exit(code)
