"""CPU package and DRAM energy from Linux powercap RAPL in sysfs (layer 3).

Layout (Documentation/ABI/testing/sysfs-class-powercap)::

    <root>/intel-rapl:0/name                 package-0
    <root>/intel-rapl:0/energy_uj            cumulative µJ
    <root>/intel-rapl:0/max_energy_range_uj  the counter's range
    <root>/intel-rapl:0/intel-rapl:0:0/name  core | uncore | dram

The window total is packages + DRAM. ``core``/``uncore`` sit inside the
package and ``psys`` contains the package, so summing them would count twice;
they are skipped. The same driver serves AMD Zen (package only).

Wrap-around: a counter restarts at 0 after ``max_energy_range_uj``, so when the
end reading is below the begin reading the delta is taken modulo
``max_energy_range_uj + 1``. Only one wrap per window can be seen this way: a
package counter of 2^32 µJ wraps after ~70 min at 1 kW, ~20 min at 200 W, so
keep windows shorter than that.

Permissions: since Linux 5.10 (CVE-2020-8694, backported to stable kernels)
``energy_uj`` is readable by root only; the meter then reports itself
unavailable with the fix in ``unavailable_reason``, and callers fall back to
the estimate.

``root`` is injectable (default ``/sys/class/powercap``), so tests read a real
sysfs-shaped tree in a temp dir; ``reader`` lets a test stand in for a kernel
that refuses the read (tests run as root, and root ignores file modes).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...core.errors import MeasurementError
from .base import CounterMeter

DEFAULT_ROOT = Path("/sys/class/powercap")
_PACKAGE_ZONE = re.compile(r"^intel-rapl:(\d+)$")
_SUB_ZONE = re.compile(r"^intel-rapl:(\d+):(\d+)$")

Reader = Callable[[Path], str]


def _read_text(path: Path) -> str:
    return path.read_text()


@dataclass(frozen=True)
class RaplZone:
    domain: str  # 'package-0', 'dram-0'
    path: Path
    max_energy_range_uj: int


class RaplMeter(CounterMeter):
    """Energy windows over RAPL package and DRAM counters."""

    name = "rapl"
    method = "RAPL energy counters (powercap sysfs)"

    def __init__(
        self, root: Path | None = None, *, device: str = "cpu", reader: Reader | None = None
    ) -> None:
        super().__init__(device)
        self.root = Path(root) if root is not None else DEFAULT_ROOT
        self._read = reader or _read_text
        self._zones: dict[str, RaplZone] = {}
        self._reason: str | None = None
        self._probe()

    @property
    def zones(self) -> tuple[RaplZone, ...]:
        return tuple(self._zones.values())

    @property
    def unavailable_reason(self) -> str | None:
        return self._reason

    def _probe(self) -> None:
        try:
            zones = self._discover()
        except OSError as exc:
            self._reason = f"cannot list RAPL zones under {self.root}: {exc.strerror or exc}"
            return
        if not zones:
            self._reason = (
                f"no RAPL package zones under {self.root} (not Linux, no intel_rapl driver, "
                "or a container without /sys/class/powercap mounted)"
            )
            return
        for zone in zones:
            try:
                int(self._read(zone.path / "energy_uj").strip())
            except PermissionError:
                self._reason = (
                    f"permission denied reading {zone.path / 'energy_uj'}: since Linux 5.10 "
                    "(CVE-2020-8694) RAPL counters are root-only; run as root or grant read "
                    "access (udev rule: chmod g+r on energy_uj)"
                )
                return
            except (OSError, ValueError) as exc:
                self._reason = f"cannot read {zone.path / 'energy_uj'}: {exc}"
                return
        self._zones = {z.domain: z for z in zones}

    def _discover(self) -> list[RaplZone]:
        if not self.root.is_dir():
            return []
        zones: list[RaplZone] = []
        for pkg_dir in sorted(self.root.iterdir(), key=lambda p: p.name):
            match = _PACKAGE_ZONE.match(pkg_dir.name)
            if not match:
                continue
            pkg = match.group(1)
            name = self._zone_name(pkg_dir)
            if not name.startswith("package"):
                continue  # psys contains the packages: counting it too would double-count
            zones.append(self._zone(name, pkg_dir))
            # Subzones are nested in the package dir (and flat symlinks in the real
            # /sys/class/powercap); look in both, nested first.
            seen: set[str] = set()
            for parent in (pkg_dir, self.root):
                for sub in sorted(parent.iterdir(), key=lambda p: p.name):
                    sub_match = _SUB_ZONE.match(sub.name)
                    if not sub_match or sub_match.group(1) != pkg or sub.name in seen:
                        continue
                    seen.add(sub.name)
                    if self._zone_name(sub) == "dram":
                        zones.append(self._zone(f"dram-{pkg}", sub))
        return zones

    def _zone_name(self, zone_dir: Path) -> str:
        try:
            return self._read(zone_dir / "name").strip()
        except OSError:
            return ""

    def _zone(self, domain: str, zone_dir: Path) -> RaplZone:
        try:
            max_range = int(self._read(zone_dir / "max_energy_range_uj").strip())
        except (OSError, ValueError):
            max_range = 0  # unknown range: a wrap cannot be corrected (see delta_j)
        return RaplZone(domain, zone_dir, max_range)

    def read_counters(self) -> dict[str, int]:
        if self._reason is not None:
            raise MeasurementError(f"rapl meter unavailable: {self._reason}")
        values: dict[str, int] = {}
        for domain, zone in self._zones.items():
            try:
                values[domain] = int(self._read(zone.path / "energy_uj").strip())
            except (OSError, ValueError) as exc:
                raise MeasurementError(f"reading {zone.path / 'energy_uj'} failed: {exc}") from exc
        return values

    def delta_j(self, domain: str, begin: int, end: int) -> float:
        delta_uj = end - begin
        if delta_uj < 0:
            max_range = self._zones[domain].max_energy_range_uj
            if max_range <= 0:
                raise MeasurementError(
                    f"RAPL counter {domain} went backwards and its max_energy_range_uj is unknown"
                )
            delta_uj %= max_range + 1  # the counter runs 0..max_range inclusive
        return delta_uj * 1e-6  # µJ -> J, the one unit conversion
