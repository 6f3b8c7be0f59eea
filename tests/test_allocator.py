import ctypes
import json
import os
import subprocess
import sys

import pytest

from torchgeo_ssg2 import allocator

try:
    _LIBC = ctypes.CDLL(None)
    _LIBC.gnu_get_libc_version  # noqa: B018
    _LIBC.mallinfo2  # noqa: B018
    GLIBC = sys.platform.startswith('linux')
except (OSError, AttributeError):
    GLIBC = False

pytestmark = pytest.mark.skipif(not GLIBC, reason='needs glibc >= 2.33 (mallinfo2)')

# In a fresh interpreter: run SETUP, then allocate a 64 MiB block with malloc and
# report how many more blocks glibc then holds mapped apart from its heap
# (mallinfo2's hblks): 1 under the default thresholds, 0 once freed blocks are kept.
PROBE = """
import ctypes, json, sys
result = None
{setup}
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        'arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks', 'fsmblks',
        'uordblks', 'fordblks', 'keepcost')]
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
libc.mallinfo2.restype = Info
before = libc.mallinfo2().hblks
block = libc.malloc(64 << 20)
mapped = libc.mallinfo2().hblks - before
libc.free(block)
print(json.dumps({{'result': result, 'mapped': mapped}}))
"""


def probe(setup: str, **env: str) -> dict[str, object]:
    environ = {
        k: v for k, v in os.environ.items() if k not in allocator.ENVIRONMENT_VARIABLES
    }
    proc = subprocess.run(
        [sys.executable, '-c', PROBE.format(setup=setup)],
        capture_output=True,
        text=True,
        check=True,
        env=environ | env,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


KEEP = 'from torchgeo_ssg2.allocator import keep_freed_memory\nresult = keep_freed_memory()'


def test_default_thresholds_map_a_large_block() -> None:
    assert probe('') == {'result': None, 'mapped': 1}


def test_keep_freed_memory_serves_large_blocks_from_the_heap() -> None:
    assert probe(KEEP) == {'result': True, 'mapped': 0}


@pytest.mark.parametrize('name', allocator.ENVIRONMENT_VARIABLES)
def test_the_users_environment_variable_wins(name: str) -> None:
    # the user's own (default-sized) threshold stays: the block is mapped
    assert probe(KEEP, **{name: str(32 << 20)}) == {'result': False, 'mapped': 1}


def test_the_command_line_keeps_freed_memory() -> None:
    setup = (
        'from torchgeo_ssg2.cli import main\n'
        'try:\n'
        "    main(['predict', '--help'])\n"
        'except SystemExit:\n'
        '    pass'
    )
    assert probe(setup)['mapped'] == 0


def test_not_on_other_platforms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator.sys, 'platform', 'darwin')
    assert allocator.keep_freed_memory() is False
