"""The durable usage pipeline: usage records to the store in batches, through a spill file when it is down.

`UsageWriter` (writer.py) is a `UsageConsumer`: the usage queue hands it each priced batch; it
buffers, writes batches with `adapters.usage_store.write_usage` (exactly once, rollups in the same
transaction), spills to local files (spill.py) while the store is down or slow, and replays them
when it answers. `usage_writer_for(cfg, metrics)` builds it when the config has a control-plane
store and metering on; `writer_lifespan(writer, store)` runs it for the app's lifetime.
"""

from gateway.usage_writer.spill import SpillDir, SpillFile, SpillRead
from gateway.usage_writer.writer import UsageWriter, usage_writer_for, writer_lifespan

__all__ = ["SpillDir", "SpillFile", "SpillRead", "UsageWriter", "usage_writer_for", "writer_lifespan"]
