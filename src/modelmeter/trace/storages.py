"""Storage identity, role and lifetime during a trace (layer 1).

Each distinct tensor storage gets a small integer id. Views share their base's
storage, so memory is never counted twice. Lifetimes are real: a weak
reference to each storage tells when eager PyTorch let it go, which gives the
liveness timeline the activation-memory figures are built from.
"""

from __future__ import annotations

import torch
from torch.multiprocessing.reductions import StorageWeakRef

from ..core.events import ACTIVATION, CONSTANT, TensorMeta

_expired = torch.UntypedStorage._expired


class StorageTable:
    def __init__(self) -> None:
        self._by_cdata: dict[int, tuple[int, StorageWeakRef]] = {}
        self.roles: dict[int, str] = {}
        self.nbytes: dict[int, int] = {}
        # Storages created by traced ops and still alive: id -> weak cdata, checked before every op.
        self._live: dict[int, int] = {}
        self._next = 0

    def register(self, tensor: torch.Tensor, role: str) -> int:
        """Give the tensor's storage an id with `role` unless it already has one."""
        storage = tensor.untyped_storage()
        cdata = storage._cdata
        known = self._by_cdata.get(cdata)
        if known is not None and not known[1].expired():
            return known[0]
        sid = self._next
        self._next += 1
        ref = StorageWeakRef(storage)
        self._by_cdata[cdata] = (sid, ref)
        self.roles[sid] = role
        self.nbytes[sid] = storage.nbytes()
        return sid

    def meta(self, tensor: torch.Tensor, new_role: str = CONSTANT) -> TensorMeta:
        """Describe a tensor; a storage seen for the first time gets `new_role`."""
        storage = tensor.untyped_storage()
        known = self._by_cdata.get(storage._cdata)
        if known is not None and not known[1].expired():
            sid = known[0]
        else:
            sid = self.register(tensor, new_role)
            if new_role == ACTIVATION or new_role.startswith("grad"):
                self._live[sid] = self._by_cdata[storage._cdata][1].cdata
        return TensorMeta(
            shape=tuple(tensor.shape),
            dtype=str(tensor.dtype).removeprefix("torch."),
            itemsize=tensor.element_size(),
            storage=sid,
            storage_nbytes=self.nbytes[sid],
            role=self.roles[sid],
        )

    def collect_freed(self) -> tuple[int, ...]:
        """Ids of traced storages that died since the last call."""
        # The raw check, not StorageWeakRef.expired(): this runs once per op per live storage.
        expired = _expired
        dead = tuple(sid for sid, cdata in self._live.items() if expired(cdata))
        for sid in dead:
            del self._live[sid]
        return dead
