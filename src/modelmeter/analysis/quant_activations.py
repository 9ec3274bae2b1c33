"""Activation quantisation what-ifs: W8A8, W4A8, fp8 (layer 3).

Weight-only quantisation (`--weights int8/int4`) shrinks the weights read and
still multiplies in 16 bits. Activation quantisation (SmoothQuant's W8A8,
QServe's W4A8, fp8 serving) also quantises the activations entering each
matrix product, so the products run on the device's int8 / fp8 matrix units.
The what-if, applied by `roofline` and `llm`:

* matrix FLOPs at the activation precision's matrix peak (`peak_flops_for`);
* vector work (norms, softmax, activations functions) at the 16-bit vector rate:
  quantised kernels dequantise around it;
* activation bytes and the KV cache at the activation precision's width;
* weights at `--weights` in the weight-only layout (linear layers quantised,
  embeddings, head and norms 16-bit); without `--weights`, at the activation
  precision (W8A8 for int8, fp8 weights for fp8).

A device without a matrix peak at that precision cannot run the what-if: the
error names the devices that can.
"""

from __future__ import annotations

from ..core.errors import UserInputError
from ..core.precision import Precision, parse_precision
from ..hardware import Hardware, list_hardware

ACTIVATION_PRECISIONS = ("int8", "fp8")


def parse_activations(activations: str | None) -> str | None:
    """A valid activation precision name, 'int8' or 'fp8' (None: not quantised)."""
    if activations is None:
        return None
    try:
        name = parse_precision(activations).name
    except UserInputError:
        name = None
    if name not in ACTIVATION_PRECISIONS:
        raise UserInputError(f"--activations takes {' or '.join(ACTIVATION_PRECISIONS)} (quantised "
                             f"activations), got {activations!r}; for 16-bit activations use --dtype")
    return name


def check_activations(hw: Hardware, activations: str | None) -> Precision | None:
    """The activation precision, checked against `hw`'s matrix peaks (None: not quantised)."""
    name = parse_activations(activations)
    if name is None:
        return None
    p = parse_precision(name)
    if p.name not in hw.peak_flops:
        have = ", ".join(h.id for h in list_hardware() if p.name in h.peak_flops)
        raise UserInputError(f"{hw.id} has no {p.name} matrix peak in the database, so {p.name} "
                             f"activations cannot be costed; devices with one: {have}")
    return p


def default_weights(activations: Precision | None, weights: str | None) -> str | None:
    """Weights follow the activations when not given (W8A8, fp8)."""
    if weights is not None or activations is None:
        return weights
    return activations.name
