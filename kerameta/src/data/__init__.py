from kerameta.src.data.shard import shard_tasks as shard_tasks
