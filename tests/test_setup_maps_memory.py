"""setup_maps' per-case writer holds one channel at a time: its peak memory does not grow with the class count."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SHAPE = (16, 96, 96)
SPACING = (2.0, 1.0, 1.0)
CHANNEL_BYTES = 4 * SHAPE[0] * SHAPE[1] * SHAPE[2]
"""One float32 channel of the case (0.6 MB); 117 float32 channels held at once would be 69 MB."""

MEASURE = r"""
import json, os, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from preprocessed_case import write_preprocessed_case
from nnunet_losses.synthetic.many_organs import many_organs_case

root = Path({root!r})
os.environ["nnUNet_preprocessed"] = str(root)
from nnunet_losses.nnunet.configuration import load_configuration
from nnunet_losses.nnunet.map_store import MapStore
from nnunet_losses.nnunet.setup_maps import write_case

def status(key):
    return int(next(line for line in open("/proc/self/status") if line.startswith(key)).split()[1]) * 1024

_, labels, spacing = many_organs_case(2, 117, {shape}, {spacing})
stores = {{}}
for classes, case_labels in ((4, labels % 4), (117, labels)):  # the same geometry; 4 classes: each a union of structures
    write_preprocessed_case(root, f"Dataset96{{classes % 10}}_Memory{{classes}}", case_labels, classes, spacing, (16, 96, 96))
    stores[classes] = MapStore(load_configuration(f"Dataset96{{classes % 10}}_Memory{{classes}}", "3d_fullres"))
    stores[classes].folder.mkdir(parents=True)
del labels, case_labels
job = ("case_000", ("rrw", "signed_distance"), False, True)
write_case(stores[4], job)  # once unmeasured: first-use allocations of blosc2, edt and numpy
result = {{}}
for classes in (4, 117):
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets the high-water mark of the resident set to its current size
    written = write_case(stores[classes], job)
    result[classes] = {{"peak": status("VmHWM:"), "bytes": written.bytes}}
print(json.dumps(result))
"""


def peak_memory(root: Path) -> dict:
    """Peak resident memory of the process (bytes) during and bytes written by ``write_case`` for 4 and 117 classes, in a fresh process."""
    script = MEASURE.format(tests=str(Path(__file__).parent), root=str(root), shape=SHAPE, spacing=SPACING)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    return {int(k): v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs to reset the peak")
def test_peak_memory_of_a_case_does_not_grow_with_its_class_count(tmp_path):
    measured = peak_memory(tmp_path)
    few, many = measured[4], measured[117]
    # the bound: the 117-class case needs at most two float32 channels more than the 4-class one (allocator slack,
    # blosc2's buffers), not 113 channels more
    assert many["peak"] <= few["peak"] + 2 * CHANNEL_BYTES, measured
    assert many["bytes"] > 10 * few["bytes"]  # all 117 channels were written
