"""Runs inside the emulated aarch64 Python (tests/aarch64.py): loads variants compiled on x86 with the
torch-free runtime and writes what their engines give, for test_aarch64.py to compare with x86's.

    python3.11 aarch64_worker.py JOB.json

JOB: {"photos": [paths], "variants": [{"name", "dir", "feeds": npz of x86's pre-processed photos}], "out": dir}.
Per variant, out/<name>.npz holds, for photo i: feeds_i (pre-processed here, from the file), own_i/<output>
(the engine on feeds_i) and same_i/<output> (the engine on x86's feeds_i: the same run when feeds_i is x86's
to the bit); out/<name>.json says whether it ran.
"""

from __future__ import annotations

import json
import platform
import sys
import traceback
from pathlib import Path

sys.modules["torch"] = None  # type: ignore[assignment]  # the device side never needs it: prove it here
sys.modules["onnx"] = None  # type: ignore[assignment]

import numpy as np  # noqa: E402

import edgevision  # noqa: E402
from edgevision.errors import BackendNotInstalled  # noqa: E402
from edgevision.runtime.images import to_rgb  # noqa: E402


def run_variant(variant: dict, photos: list[str], out: Path) -> dict:
    x86 = np.load(variant["feeds"])
    arrays: dict[str, np.ndarray] = {}
    with edgevision.load(variant["dir"], threads=2) as model:
        for i, photo in enumerate(photos):
            feeds, _ = model.feeds([to_rgb(photo)])
            arrays[f"feeds_{i}"] = feeds[model.input_name]
            same = {name: x86[f"{i}/{name}"] for name in feeds}
            outputs = {"own": model.runner.infer(feeds)}
            # pre-processed here exactly as on x86 (the usual case): one inference serves both comparisons
            identical = all(np.array_equal(feeds[name], same[name]) for name in feeds)
            outputs["same"] = outputs["own"] if identical else model.runner.infer(same)
            for kind, values in outputs.items():
                for name, value in values.items():
                    arrays[f"{kind}_{i}/{name}"] = value
    np.savez(out / f"{variant['name']}.npz", **arrays)
    return {"status": "ran"}


def main() -> int:
    job = json.loads(Path(sys.argv[1]).read_text())
    out = Path(job["out"])
    for variant in job["variants"]:
        try:
            record = run_variant(variant, job["photos"], out)
        except BackendNotInstalled as e:
            record = {"status": "not installed", "reason": str(e)}
        except Exception:  # noqa: BLE001  # reported per variant, so one failure hides no other result
            record = {"status": "failed", "reason": traceback.format_exc()[-3000:]}
        record.update(machine=platform.machine(), torch_loaded=sys.modules.get("torch") is not None)
        (out / f"{variant['name']}.json").write_text(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
