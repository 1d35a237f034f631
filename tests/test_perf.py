import os
import subprocess
import sys

import pytest

CODE = "from tinystories_lib.lm.allocator import keep_freed_memory as k; print(k(), k())"


def run(env_extra: dict) -> str:
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_allocator_setting_applies_once_and_can_be_turned_off():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc: the setting is a documented no-op")
    assert run({"TINYSTORIES_MALLOC": ""}) == "True True"  # in force, and asking again is harmless
    assert run({"TINYSTORIES_MALLOC": "default"}) == "False False"
