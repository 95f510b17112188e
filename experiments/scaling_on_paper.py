"""Scaling on paper: expected step time, memory and communication of the cross-encoder train step.

Not a measurement: a model of one joint + DANN train step (seq 128, bf16 compute, float32 master
weights, AdamW) of bert-base / bert-large at global batch 256-4096 on 1, 8 and 64 chips, with
the (data, fsdp, tensor) mesh. Writes the markdown table of docs/scaling.md:

  python experiments/scaling_on_paper.py [--mfu 0.5] [--seq 128] > docs/scaling.md

How each number is computed (every assumption is a flag):
  * FLOPs: `train/flops.step_flops` (6 N_dense + 12 L s d per token, + the heads); compute time =
    FLOPs / (chips x 989 TFLOP/s x MFU). MFU is an assumption (--mfu), not a measurement: no GPU
    run exists yet (experiments/gpu_proof.sh is prepared for one).
  * Sharding: every parameter's PartitionSpec from `train/sharding.DEFAULT_RULES` on the mesh
    (`spec_for`, including its "replicate a dimension that does not divide" fallback), so the
    per-chip bytes and the bytes each collective moves follow the rules the trainer uses.
  * Communication per chip and step (ring collectives, volume factor (n-1)/n):
      fsdp:   all-gather of each fsdp-sharded weight for the forward and again for the backward
              (float32 as stored: XLA gathers before the cast) + reduce-scatter of its float32
              gradient: 3 x (F-1)/F x bytes of the weight's tensor-shard.
      data:   all-reduce of the float32 gradients a chip holds: 2 x (D-1)/D x bytes held.
      tensor: 2 all-reduces of the [b_chip, s, d] bf16 activations per layer forward (after
              attention and after the MLP), 2 backward: 4 L x 2 (T-1)/T x b_chip s d x 2 bytes.
    Bandwidth per chip: --intra GB/s inside a node of --node chips (NVLink 4: 450 GB/s one way),
    --inter GB/s across nodes (one 400 Gb/s NIC per GPU: 50 GB/s). An axis whose groups span
    nodes runs at --inter. The mesh puts tensor innermost, then fsdp, then data (as
    `jax.make_mesh` orders devices), so data spans nodes first.
  * Step time: compute + communication not hidden (sum) and fully overlapped (max); real runs
    land in between (XLA overlaps FSDP gathers with the previous layer's matmuls).
  * Memory per chip: float32 params + grads + 2 Adam moments (16 bytes per parameter) over the
    chips that shard each parameter, plus activations without remat (Korthikanti et al. 2022:
    s b h (34 + 5 a s / h) bytes per layer at 16-bit), the batch split over data x fsdp and the
    activations' tensor-split part (24 of the 34, and the 5 a s / h attention term) over tensor.
"""

from __future__ import annotations

import argparse
import functools
import math
import types

import jax
from flax import nnx

from crossrec_jax.models import bert, recommender
from crossrec_jax.train import flops, sharding

MODELS = {
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                      intermediate_size=3072),
    "bert-large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                       intermediate_size=4096),
}
# chips -> (data, fsdp, tensor): FSDP inside a node (NVLink), data parallel across nodes.
MESHES = {1: (1, 1, 1), 8: (1, 8, 1), 64: (8, 8, 1)}
TENSOR_MESHES = {8: (1, 4, 2), 64: (8, 4, 2)}
HEADS = ((256,), (256,))


@functools.lru_cache(maxsize=None)
def param_shapes(name: str) -> tuple[dict[str, tuple[int, ...]], bert.BertConfig]:
  """Parameter path -> shape of the recommender with this encoder (no arrays allocated)."""
  cfg = bert.BertConfig(vocab_size=30522, max_position_embeddings=512, **MODELS[name])
  model = nnx.eval_shape(lambda: recommender.CrossEncoderRecommender(
      bert.BertModel(cfg, rngs=nnx.Rngs(0)), rating_hidden=HEADS[0],
      discriminator_hidden=HEADS[1], rngs=nnx.Rngs(0)))
  return {"params/" + "/".join(str(p) for p in path): tuple(v.shape)
          for path, v in nnx.iter_graph(model) if isinstance(v, nnx.Param)}, cfg


def _ways(spec, mesh, axis=None) -> int:
  out = 1
  for entry in spec:
    for a in ((entry,) if isinstance(entry, str) else (entry or ())):
      if axis is None or a == axis:
        out *= mesh.shape[a]
  return out


def estimate(name: str, batch: int, mesh_sizes: tuple[int, int, int], args) -> dict:
  shapes, cfg = param_shapes(name)
  d_, f_, t_ = mesh_sizes
  mesh = types.SimpleNamespace(shape=dict(zip(sharding.MESH_AXES, mesh_sizes)))
  chips = d_ * f_ * t_
  state_bytes = fsdp_bytes = grad_bytes = 0.0
  for path, shape in shapes.items():
    spec = sharding.spec_for(path, shape, mesh)
    size = math.prod(shape)
    held = size / _ways(spec, mesh)
    state_bytes += 16 * held
    grad_bytes += 4 * held
    if _ways(spec, mesh, "fsdp") > 1:
      fsdp_bytes += 3 * (f_ - 1) / f_ * 4 * size / _ways(spec, mesh, "tensor")
  b_chip = batch / (d_ * f_)
  s, h, a, layers = args.seq, cfg.hidden_size, cfg.num_attention_heads, cfg.num_hidden_layers
  tensor_bytes = (4 * layers * 2 * (t_ - 1) / t_ * b_chip * s * h * 2) if t_ > 1 else 0.0
  data_bytes = 2 * (d_ - 1) / d_ * grad_bytes if d_ > 1 else 0.0
  bw = lambda group: (args.intra if group <= args.node else args.inter) * 1e9
  comm_s = (tensor_bytes / bw(t_) + fsdp_bytes / bw(f_ * t_) + data_bytes / bw(chips))
  act = layers * s * b_chip * h * (10 + 24 / t_ + 5 * a * s / h / t_)
  step_flops = flops.step_flops(cfg, batch, s, head_widths=HEADS)
  compute_s = step_flops / (chips * args.peak * 1e12 * args.mfu)
  return {"model": name, "batch": batch, "chips": chips, "mesh": mesh_sizes,
          "compute_ms": 1e3 * compute_s, "comm_ms": 1e3 * comm_s,
          "step_ms_sum": 1e3 * (compute_s + comm_s), "step_ms_max": 1e3 * max(compute_s, comm_s),
          "comm_gb": (tensor_bytes + fsdp_bytes + data_bytes) / 1e9,
          "mem_gb": (state_bytes + act) / 1e9, "state_gb": state_bytes / 1e9,
          "seq_per_s": batch / max(compute_s, comm_s)}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--mfu", type=float, default=0.5, help="assumed model FLOPs utilisation")
  parser.add_argument("--peak", type=float, default=989.0, help="dense bf16 TFLOP/s per chip")
  parser.add_argument("--seq", type=int, default=128)
  parser.add_argument("--intra", type=float, default=450.0, help="GB/s per chip in a node")
  parser.add_argument("--inter", type=float, default=50.0, help="GB/s per chip across nodes")
  parser.add_argument("--node", type=int, default=8, help="chips per node")
  parser.add_argument("--batches", default="256,1024,4096")
  parser.add_argument("--hbm", type=float, default=80.0, help="GB per chip (H100: 80, H200: 141)")
  args = parser.parse_args(argv)
  jax.config.update("jax_platforms", "cpu")
  print(f"# Scaling on paper (`python experiments/scaling_on_paper.py --mfu {args.mfu}`)\n")
  print(f"Not measured: a model of the joint + DANN train step at seq {args.seq}, bf16 compute, "
        f"float32 master weights + AdamW. Assumed: {args.peak:g} TFLOP/s dense bf16 per chip "
        f"(H100/H200 SXM) at {args.mfu:.0%} MFU; {args.intra:g} GB/s per chip inside a node of "
        f"{args.node} (NVLink), {args.inter:g} GB/s across nodes (400 Gb/s NIC per GPU); ring "
        f"collectives; activations without remat (memory marked * exceeds {args.hbm:g} GB: "
        "remat, `config.model.encoder.remat=True`, or more chips). Communication from the partition rules "
        "(`train/sharding.py` DEFAULT_RULES); how each term is computed: the script's docstring. "
        "Step time is given with communication not hidden (sum) and fully overlapped (max).\n")
  print("| model | global batch | chips | mesh (data, fsdp, tensor) | compute ms | comm GB/chip "
        "| comm ms | step ms (sum / max) | seq/s (overlapped) | memory GB/chip (state) |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for name in MODELS:
    for batch in (int(b) for b in args.batches.split(",")):
      for chips in (1, 8, 64):
        meshes = [MESHES[chips]] + ([TENSOR_MESHES[chips]] if chips in TENSOR_MESHES else [])
        for m in meshes:
          if batch % (m[0] * m[1]):
            continue
          r = estimate(name, batch, m, args)
          print(f"| {name} | {batch} | {chips} | {m} | {r['compute_ms']:.1f} | "
                f"{r['comm_gb']:.2f} | {r['comm_ms']:.1f} | {r['step_ms_sum']:.1f} / "
                f"{r['step_ms_max']:.1f} | {r['seq_per_s']:,.0f} | {r['mem_gb']:.1f}"
                f"{'*' if r['mem_gb'] > args.hbm else ''} ({r['state_gb']:.1f}) |")


if __name__ == "__main__":
  main()
