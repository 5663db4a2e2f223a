"""Exact global norms under ``torch.distributed``: DDP, FSDP2, 2-D meshes, pipelines.

Every clipper gives, on every rank, the norms, clipped gradients and
statistics one process would give on the full gradient:

* :mod:`~gradclip.distributed.placement`: which rank counts which part of a
  tensor (DTensor ``Shard`` placements are summed, ``Replicate`` ones counted
  once, on the rank with coordinate 0);
* :mod:`~gradclip.distributed.reduce`: :class:`NormPacket`, the ONE
  all-reduce of a clip, carrying every partial sum the clipper and the
  monitor need (none when the gradients are replicated, as under DDP);
* :mod:`~gradclip.distributed.layout`: :func:`layout`, a clip's gradients
  as local views, and their global per-tensor and total norms.

What goes over the wire, and how to launch with ``torchrun``, is in
``docs/distributed.md``.
"""

from gradclip.distributed.layout import Layout, layout
from gradclip.distributed.placement import LocalShard, is_dtensor, local_shards
from gradclip.distributed.reduce import NormPacket

__all__ = ["Layout", "LocalShard", "NormPacket", "is_dtensor", "layout", "local_shards"]
