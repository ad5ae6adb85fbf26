"""What the machine offers the loops: the CPU's flags and a GPU."""

import functools

import tensorflow as tf


@functools.cache
def cpu_flags():
    """The CPU's flags as `/proc/cpuinfo` lists them; empty where it cannot
    be read (then no 16-bit matmul is taken for fast)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_gpu():
    """Whether TensorFlow sees a GPU (16-bit matmuls are fast there)."""
    return bool(tf.config.list_logical_devices("GPU"))
