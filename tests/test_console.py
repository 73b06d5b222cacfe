"""What the console does around heavy imports: the collector paused, C++ chatter filtered."""

import gc
import os

from mnist_exp.console import collector_paused, stderr_filtered


def test_heavy_imports_run_with_the_collector_paused_and_leave_their_objects_frozen():
    frozen = gc.get_freeze_count()
    try:
        with collector_paused():
            paused = not gc.isenabled()
            made = [[index] for index in range(1000)]  # lasting objects, as an import makes
        assert paused and gc.isenabled()
        assert gc.get_freeze_count() >= frozen + len(made)
    finally:
        gc.unfreeze()


def test_a_collector_the_caller_disabled_stays_disabled():
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()


def test_lines_written_to_the_stderr_descriptor_lose_only_the_noise(capfd):
    with stderr_filtered(("cuda_dnn.cc",)):
        os.write(2, b"E0000 cuda_dnn.cc:8454] Unable to register cuDNN factory\n")
        os.write(2, b"a line the user needs\n")
    assert capfd.readouterr().err == "a line the user needs\n"
