"""What CPU is this, and what is its peak by the ISA? (layer 2)

Reads `/proc/cpuinfo`, `/proc/meminfo` and `/sys/devices/system/cpu` under an
injectable `root` (tests build a sysfs-shaped tree in a temp dir), and derives
the CPU peak as `cores x clock x FLOPs/cycle/core` from the database's
`cpu_peak_flops_method` table. The ISA peak is an upper bound: heavy AVX-512 or
AMX code can run below the clock used here, and a turbo clock can run above it.
`cpu_name` is the package's one reader of the CPU's name (reports, run records,
calibrated profiles all use it).
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .specs import cpu_peak_method


@dataclass(frozen=True)
class CacheLevel:
    level: int
    type: str  # 'Data' | 'Instruction' | 'Unified'
    size_bytes: int
    shared_cpu_list: str


@dataclass(frozen=True)
class CpuInfo:
    model_name: str
    vendor: str  # vendor_id as the kernel reports it, e.g. 'GenuineIntel'
    family: int | None
    model: int | None
    flags: frozenset[str]
    logical_cpus: int  # CPUs this process may run on
    physical_cores: int  # distinct cores among those CPUs (SMT siblings share FMA units)
    clock_hz: float | None
    clock_source: str
    max_clock_hz: float | None
    caches: tuple[CacheLevel, ...]
    memory_bytes: int | None
    memory_available_bytes: int | None

    @property
    def llc_bytes(self) -> int | None:
        """Size of the last-level data/unified cache, None when sysfs does not say."""
        data = [c for c in self.caches if c.type != "Instruction"]
        return max(data, key=lambda c: c.level).size_bytes if data else None

    def cache_bytes(self, level: int) -> int | None:
        for c in self.caches:
            if c.level == level and c.type != "Instruction":
                return c.size_bytes
        return None


@dataclass(frozen=True)
class IsaPeak:
    """CPU peak by the ISA; `flops_per_cycle` per core, `peak_flops` for `cores`."""

    isa_class: str  # key of cpu_peak_flops_method['flops_per_cycle_per_core']
    reason: str  # which flags / vendor facts chose the class
    cores: int
    clock_hz: float
    clock_source: str
    flops_per_cycle: dict[str, float]
    peak_flops: dict[str, float]
    peak_flops_at_max_clock: dict[str, float] | None
    sources: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _size_bytes(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)i?B?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"unreadable cache size {text!r}")
    return int(m.group(1)) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[m.group(2).upper()]


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cpuinfo_blocks(text: str) -> list[dict[str, str]]:
    blocks = []
    for chunk in text.strip().split("\n\n"):
        block = {}
        for line in chunk.splitlines():
            if ":" in line:
                k, _, v = line.partition(":")
                block[k.strip()] = v.strip()
        if block:
            blocks.append(block)
    return blocks


# Keys that name the CPU in /proc/cpuinfo, whichever comes first: x86 (and many ARM kernels)
# say "model name"; some ARM kernels give only "Hardware" (the SoC) or "Model" (the board).
_NAME_KEYS = ("model name", "Model", "Hardware")


def cpu_name_in(cpuinfo: str) -> str | None:
    """The CPU's name in the text of a /proc/cpuinfo (None when it names none)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in _NAME_KEYS and value.strip():
            return value.strip()
    return None


def cpu_name() -> str:
    """This machine's CPU name: the one reader every report, run record and profile uses.

    /proc/cpuinfo where there is one (Linux); elsewhere the platform's own word
    (``platform.processor()``, which is often empty, then the architecture).
    """
    return (cpu_name_in(_read(Path("/proc/cpuinfo")) or "")
            or platform.processor() or platform.machine() or "unknown CPU")


def read_cpu_info(root: Path = Path("/")) -> CpuInfo:
    """Describe the CPU from procfs/sysfs under `root`; missing files give None fields."""
    text = _read(root / "proc/cpuinfo") or ""
    blocks = _cpuinfo_blocks(text)
    try:
        allowed = sorted(os.sched_getaffinity(0)) if root == Path("/") else None
    except AttributeError:  # not Linux
        allowed = None
    mine = [b for b in blocks if allowed is None or int(b.get("processor", -1)) in allowed] or blocks
    first = mine[0] if mine else {}
    cores = {(b.get("physical id", "0"), b.get("core id", b.get("processor"))) for b in mine}

    cpu0 = root / "sys/devices/system/cpu/cpu0"
    caches = []
    for idx in sorted((cpu0 / "cache").glob("index*")):
        level, ctype, size = (_read(idx / f) for f in ("level", "type", "size"))
        if level and ctype and size:
            caches.append(
                CacheLevel(int(level), ctype, _size_bytes(size), _read(idx / "shared_cpu_list") or "")
            )

    # Clock: prefer the nominal (base) clock, the method's conservative proxy for
    # the sustained all-core AVX clock; fall back to what the kernel reports.
    clock_hz: float | None = None
    source = "unknown"
    base_khz = _read(cpu0 / "cpufreq/base_frequency")
    # A tree other than this machine's (tests) never borrows this machine's platform name.
    name = cpu_name() if root == Path("/") else (cpu_name_in(text) or "unknown CPU")
    at_ghz = re.search(r"@\s*([\d.]+)\s*GHz", name)
    if base_khz and base_khz.isdigit():
        clock_hz, source = int(base_khz) * 1e3, "sysfs cpufreq/base_frequency (base clock)"
    elif at_ghz:
        clock_hz, source = float(at_ghz.group(1)) * 1e9, "base clock in the CPU model name"
    elif "cpu MHz" in first:
        clock_hz = float(first["cpu MHz"]) * 1e6
        source = "/proc/cpuinfo 'cpu MHz' (clock the kernel reports; under a hypervisor the nominal clock)"
    max_khz = _read(cpu0 / "cpufreq/cpuinfo_max_freq")
    max_clock_hz = int(max_khz) * 1e3 if max_khz and max_khz.isdigit() else None

    meminfo = _read(root / "proc/meminfo") or ""
    mem = {m.group(1): int(m.group(2)) * 1024 for m in re.finditer(r"^(\w+):\s+(\d+) kB", meminfo, re.M)}

    def _int(key: str) -> int | None:
        v = first.get(key)
        return int(v) if v is not None and v.isdigit() else None

    return CpuInfo(
        model_name=name,
        vendor=first.get("vendor_id", "unknown"),
        family=_int("cpu family"),
        model=_int("model"),
        flags=frozenset(first.get("flags", "").split()),
        logical_cpus=len(mine) or (os.cpu_count() or 1),
        physical_cores=len(cores) or (os.cpu_count() or 1),
        clock_hz=clock_hz,
        clock_source=source,
        max_clock_hz=max_clock_hz,
        caches=tuple(caches),
        memory_bytes=mem.get("MemTotal"),
        memory_available_bytes=mem.get("MemAvailable"),
    )


def isa_class(info: CpuInfo) -> tuple[str, str] | None:
    """(class key in the FLOPs/cycle table, why) for this CPU, None for unknown ISAs."""
    f = info.flags
    amd = info.vendor == "AuthenticAMD"
    if amd and info.family == 0x17 and (info.model or 0) < 0x30:
        return "zen1_128bit_fma", "AMD family 17h model < 30h (Zen 1/Zen+: 128-bit FMA units)"
    if "avx512f" in f:
        if amd and (info.family or 0) < 0x1A:
            # Zen 4 runs 512-bit ops as two 256-bit halves: AVX2-class throughput.
            return (
                "avx2_fma_2units_haswell_to_alderlake_pcore_zen2_zen3_zen4",
                "avx512f on AMD family 19h (Zen 4 double-pumps 512-bit ops)",
            )
        return (
            "avx512_2fma_units_skylake_sp_icelake_sp_sapphire_rapids_zen5_server",
            "avx512f (assumes 2 FMA units; some Xeon Silver/Gold 5xxx have 1, halving this)",
        )
    if "avx2" in f and "fma" in f:
        return "avx2_fma_2units_haswell_to_alderlake_pcore_zen2_zen3_zen4", "avx2 + fma"
    if "avx" in f:
        return "avx_sandy_ivy_bridge", "avx without fma"
    if "sse2" in f:
        return "sse2_nehalem", "sse2 only"
    return None


def isa_peak(info: CpuInfo, threads: int) -> IsaPeak | None:
    """Peak FLOP/s for `threads` worker threads on this CPU (None if the ISA or clock is unknown)."""
    chosen = isa_class(info)
    if chosen is None or info.clock_hz is None:
        return None
    method = cpu_peak_method()
    key, reason = chosen
    per_cycle: dict[str, float] = {k: float(v) for k, v in method["flops_per_cycle_per_core"][key].items()}
    sources = ["so_flops"] + (["zen5_teardown"] if info.vendor == "AuthenticAMD" else [])
    if {"amx_bf16", "amx_int8"} & info.flags:
        amx = method["flops_per_cycle_per_core"]["intel_amx_sapphire_rapids"]
        if "amx_bf16" in info.flags:
            per_cycle["bf16"] = float(amx["bf16"])
        if "amx_int8" in info.flags:
            per_cycle["int8"] = float(amx["int8_ops"])
        reason += "; amx_bf16/amx_int8 tiles (per-core AMX rate)"
        sources.append("amx_wiki")
    # SMT siblings share one core's FMA units, so count cores, not threads.
    cores = max(1, min(threads, info.physical_cores))
    peak = {k: cores * info.clock_hz * v for k, v in per_cycle.items()}
    at_max = (
        {k: cores * info.max_clock_hz * v for k, v in per_cycle.items()}
        if info.max_clock_hz
        else None
    )
    return IsaPeak(key, reason, cores, info.clock_hz, info.clock_source, per_cycle, peak, at_max, tuple(sources))
