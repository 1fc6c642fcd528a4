"""Old and new load_talker on the same 24-layer hybrid bytes, alternately, a process each."""

import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, "/work/bench24")
from measure_load import CHILD

SIDES = {
    "before (9bfd513)": ("/work/bench24/old/src", "/work/bench24/published/talker_fused/hybrid"),
    "after": ("/work/main/src", "/work/bench24/published-v2/talker_fused/hybrid"),
}


def child(path, folder):
    out = subprocess.run(
        [sys.executable, "-c", CHILD, "load", folder, "2"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads([row for row in out.stdout.splitlines() if row.startswith("RESULT ")][-1][7:])


samples = {k: [] for k in SIDES}
for p, f in SIDES.values():
    child(p, f)  # warm-up
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 5):
    for k, (p, f) in SIDES.items():
        samples[k].append(child(p, f))
for k, s in samples.items():
    assert all(x["omniforge_file"].startswith(SIDES[k][0]) for x in s)
    print(
        k,
        {
            f: (
                round(statistics.median(x[f] for x in s), 2),
                round(min(x[f] for x in s), 2),
                round(max(x[f] for x in s), 2),
            )
            for f in ("seconds", "cpu_seconds", "peak_rss_mb", "rss_after_load_mb")
        },
    )
print("loadavg", os.getloadavg())
