"""The bfloat16 precision policy: what it changes, why it needs no loss scaling, where it is fast.

Contract: `NetConfig(compute_dtype="bfloat16")` (dtype "float32") makes every affine layer cast its
input and weight to bfloat16 once per call (the copies stay in the layer's cache, so the backward
does not recast) and run its three products, `x @ w`, `dx = dout @ w.T` and `dw = x.T @ dout`, on
bfloat16 operands accumulated in float32 (`preferred_element_type`). Layer outputs and gradients
are float32; parameters, optimizer state, batchnorm running statistics, the batch/layer norms and
their backward, the softmax/SVM loss and the update rules never leave float32 (master weights), so
small updates are not lost to bfloat16's 8-bit mantissa. The policy reaches the layers as a static
string (`layers.affine(x, w, b, compute_dtype)`, a `nondiff_argnums` entry of each custom VJP).

No loss scaling: float16 needs it because its 5-bit exponent flushes gradients below ~6e-8 to zero.
bfloat16 keeps float32's 8-bit exponent (the same range, down to ~1e-38) and only shortens the
mantissa to 8 bits (about 3 significant digits), so small gradients do not underflow; they are only
rounded, and the float32 accumulation and master weights bound what that rounding costs.

`fast_bfloat16(device)` says whether a device runs bfloat16 matmuls natively (TPU, a GPU of compute
capability 8.0 or later, a CPU with AVX-512 BF16 or AMX); elsewhere the casts and the emulated
bfloat16 products make the policy slower than float32 (an AVX2 CPU: see benchmarks/bench_train.py
--precision). `precision_notice(config, devices)` is the one line a CLI prints then. Core tier:
imports nothing from fc_jax, not even jax (devices are duck-typed).
"""

import sys

__all__ = ["fast_bfloat16", "precision_notice", "cpu_flags", "read_cpuinfo"]

_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 /proc/cpuinfo flags of native bf16 dot products


def read_cpuinfo() -> str | None:
    """The text of /proc/cpuinfo on Linux, else None (other systems: no flags to read)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return None


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first processor in a /proc/cpuinfo text (x86 `flags`, ARM `Features`)."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def _cpu_model(cpuinfo: str | None) -> str:
    for line in (cpuinfo or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "model name":
            return value.strip()
    return "unknown CPU"


def fast_bfloat16(device, cpuinfo: str | None = None) -> bool:
    """Whether `device` runs bfloat16 matmuls natively (faster than float32).

    Args:
      device: a `jax.Device` (anything with `.platform`; CUDA devices' `.compute_capability` is read).
      cpuinfo: the /proc/cpuinfo text to judge a CPU by (default: this machine's; tests pass one).

    Returns:
      True on TPU, on a ROCm GPU, on a CUDA GPU of compute capability >= 8.0 (or unknown), and on a
      CPU whose flags include `avx512_bf16` or `amx_bf16`; False otherwise (other CPUs, non-Linux
      CPUs, unknown platforms).
    """
    platform = getattr(device, "platform", None)
    if platform == "tpu" or platform == "rocm":
        return True
    if platform in ("gpu", "cuda"):
        cc = getattr(device, "compute_capability", None)
        try:
            return cc is None or int(str(cc).split(".")[0]) >= 8
        except ValueError:
            return True
    if platform == "cpu":
        text = read_cpuinfo() if cpuinfo is None else cpuinfo
        return bool(text) and any(f in cpu_flags(text) for f in _CPU_BF16_FLAGS)
    return False


def precision_notice(config, devices, cpuinfo: str | None = None) -> str | None:
    """One line to print when `config`'s bfloat16 policy is likely slower than float32 on `devices`.

    Args:
      config: a `NetConfig` (anything with `.compute_dtype`).
      devices: the devices the run will use (`jax.devices()`; fakes with `.platform` in tests).
      cpuinfo: as in `fast_bfloat16`.

    Returns:
      None when the policy is off or every device has fast bfloat16 matmuls; else a line such as
      "note: --precision bf16 may be slower than float32 on this CPU (no AVX-512 BF16/AMX): ...".
    """
    if getattr(config, "compute_dtype", None) != "bfloat16":
        return None
    slow = [d for d in devices if not fast_bfloat16(d, cpuinfo)]
    if not slow:
        return None
    tail = (
        "the run is valid either way (float32 master weights); --precision float32 is likely faster"
    )
    if all(getattr(d, "platform", None) == "cpu" for d in slow):
        model = _cpu_model(read_cpuinfo() if cpuinfo is None else cpuinfo)
        return (
            f"note: --precision bf16 may be slower than float32 on this CPU "
            f"(no AVX-512 BF16/AMX): {model}; {tail}"
        )
    kinds = sorted({getattr(d, "device_kind", str(d)) for d in slow})
    return (
        f"note: --precision bf16 may be slower than float32 on {', '.join(kinds)} "
        f"(no native bfloat16 matmul): {tail}"
    )
