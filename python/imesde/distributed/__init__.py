"""imesde on Ray: embed a ``ray.data.Dataset`` with a pool of model actors, and hold a stream
in an engine sharded over actors, searched exactly as one.

Installed with ``pip install "imesde[ray]"``; ``import imesde`` never imports Ray, this module
does. On a machine of your own ``ray.init()`` starts a local Ray; on a cluster,
``ray.init(address="auto")``::

    import ray, imesde.distributed as dist
    ray.init(address="auto")
    engine = dist.ShardedEngine(num_shards=8, shard_size=1_000_000)
"""

from __future__ import annotations

try:
    import ray  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError('imesde.distributed needs Ray: pip install "imesde[ray]"') from e

from imesde.distributed._embed import embed
from imesde.distributed._sharded import (
    ShardedEngine,
    ShardedHit,
    ShardedItem,
    ShardedSubscription,
)
from imesde.exceptions import ShardUnavailableError

__all__ = [
    "ShardUnavailableError",
    "ShardedEngine",
    "ShardedHit",
    "ShardedItem",
    "ShardedSubscription",
    "embed",
]
