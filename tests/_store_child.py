"""Helper process for tests/test_store.py: saves runs into a store.

    python _store_child.py DB N TAG     save N runs, then exit
    python _store_child.py DB loop TAG  save forever, printing "saved" after the first

Reports carry a payload large enough that a kill often lands mid-write.
"""

from __future__ import annotations

import sys
from pathlib import Path

from modelmeter.store import RunStore


def report(tag: str, i: int, payload: int) -> dict[str, object]:
    return {
        "schema": "modelmeter.report/1",
        "model": {"name": f"{tag}-model"},
        "totals": {"params": i, "flops": 2 * i},
        "modules": [{"path": f"layer{j}", "params": j, "note": "x" * 64} for j in range(payload)],
        "seq": i,
        "tag": tag,
    }


def main() -> None:
    db, count, tag = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    store = RunStore(db)
    if count == "loop":
        i = 0
        while True:
            store.save(report(tag, i, 2000), fingerprint={"tag": tag, "i": i}, label=f"{tag}-{i}")
            if i == 0:
                print("saved", flush=True)
            i += 1
    for i in range(int(count)):
        store.save(report(tag, i, 1), fingerprint={"tag": tag, "i": i}, label=f"{tag}-{i}")
    store.close()


if __name__ == "__main__":
    main()
