"""Helper process for tests/test_store.py and test_store_backends.py: saves runs into a store.

    python _store_child.py DB N TAG [AT]     save N runs, then exit
    python _store_child.py DB loop TAG       save forever, printing "saved" after the first

DB is an SQLite file or a postgresql:// URL (`open_store`). AT (a time.time()
value) holds the saves until then, so processes started one after another
write at the same moment.

Reports carry a payload large enough that a kill often lands mid-write.
"""

from __future__ import annotations

import sys
import time

from modelmeter.stores import open_store


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
    db, count, tag = sys.argv[1], sys.argv[2], sys.argv[3]
    store = open_store(db)
    if len(sys.argv) > 4:
        time.sleep(max(0.0, float(sys.argv[4]) - time.time()))
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
