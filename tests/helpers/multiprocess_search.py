"""One process of the two-process search test (run by tests/test_multiprocess.py, not by pytest).

usage: multiprocess_search.py PROCESS_ID NUM_PROCESSES PORT OUT.npz
Each process owns 8 / NUM_PROCESSES simulated CPU devices, feeds only its rows of every global batch
(jax.make_array_from_process_local_data), runs the same tiny search and process 0 writes the
losses, the final logits, a params checksum and how many parameter arrays were split across the
processes. One process runs on one device; two run on a 4 x 2 mesh with the FSDP + tensor-parallel
rule, so parameters and optimizer state are split across hosts.
"""
import os
import sys

pid, nproc, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={8 // nproc}"
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import jax  # noqa: E402

if nproc > 1:
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)

import numpy as np  # noqa: E402

from autox3d_jax.train import partitioning  # noqa: E402
from autox3d_jax.train import search_step as ss  # noqa: E402
from test_search_step import TOY_RULE, batches, tiny_setup  # noqa: E402


def local_rows(batch):
  n = len(batch["label"]) // jax.process_count()
  lo = jax.process_index() * n
  return {k: v[lo:lo + n] for k, v in batch.items()}


_, step, state = tiny_setup("probabilistic")
if nproc == 1:   # the reference: one device, nothing split
  mesh, rule = partitioning.make_mesh(1, devices=jax.devices()), None
else:            # 4 x 2 over both processes: parameters and momenta split by FSDP + tensor parallelism
  mesh, rule = partitioning.make_mesh(4, 2), TOY_RULE
jitted, shardings = ss.jit_search_step(step, state, mesh, rule)
state = jax.device_put(state, shardings)
losses = []
for train, val in zip(batches(4, seed=0), batches(4, seed=1)):
  state, metrics = jitted(state, partitioning.global_batch(local_rows(train), mesh),
                          partitioning.global_batch(local_rows(val), mesh))
  losses.append(float(metrics["train_loss"]))
split_across_processes = sum(not x.is_fully_addressable for x in jax.tree_util.tree_leaves(state.params))
host = partitioning.to_host({"logits": state.logits, "params": state.params})
params_sum = float(sum(np.abs(p).sum() for p in jax.tree_util.tree_leaves(host["params"])))
if jax.process_index() == 0:
  np.savez(out, params_sum=params_sum, losses=np.array(losses), split_across_processes=split_across_processes,
           **host["logits"])
print("done", jax.process_index(), jax.process_count(), jax.device_count(), flush=True)
