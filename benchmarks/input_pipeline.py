"""Input-pipeline throughput beside the train step's consumption: is the data the bottleneck?

    python benchmarks/input_pipeline.py                  # all cases, pipeline and train step
    python benchmarks/input_pipeline.py --batches 20 --no-train-step

For each case it builds the trainer's iterator (`pipeline.TrainIterator`: read, tokenize, pack, batch) on the
embedded default data and times `--batches` batches after the first (start-up is reported apart), then times
the same jitted SFT train step the trainer runs (`aya_jax/training/sft.make_train_step`, AdamW, this process's
devices) on a real batch. It prints per case:

* pipeline tokens/s per host: row tokens (batch x seq_len) produced per second by one host's iterator;
* packing efficiency: the non-padding fraction of those tokens (target: >= 95% at seq_len 512);
* train step tokens/s: row tokens consumed per second by the step on this machine's devices;
* headroom = pipeline / train step: > 1 means the pipeline keeps up (tf.data also overlaps with the step,
  which this sequential measurement does not credit).

Cases: the quickstart (cohere-tiny, batch 8 x 256, fp32), the benchmark model (cohere-bench, 8 x 512, as
benchmarks/train_step.py), and the benchmark shape on the 114-language temperature mixture
`aya_default_mixture`. Data and vocabulary are generated once under $AYA_DATA_DIR (default
~/.cache/aya_jax/data). Shared machines are noisy: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from aya_jax import (
    optimizers,  # noqa: E402
    pretrained,  # noqa: E402
)
from aya_jax.data import pipeline  # noqa: E402
from aya_jax.training import sft as sft_objective  # noqa: E402
from aya_jax.training import state as ts  # noqa: E402
from configs import quickstart  # noqa: E402

CASES = (  # name, task, model preset, dtype, batch, seq_len
    ("quickstart", "aya_default", "cohere-tiny", "float32", 8, 256),
    ("benchmark model", "aya_default", "cohere-bench", "float32", 8, 512),
    ("benchmark model, mixture", "aya_default_mixture", "cohere-bench", "float32", 8, 512),
)


def time_pipeline(config, batches: int) -> tuple[float, float, float, dict]:
    """(start-up seconds, row tokens/s, packing efficiency, one batch)."""
    spec = pipeline.prepare(config.data)
    start = time.perf_counter()
    iterator = pipeline.TrainIterator(spec, config.data, batch_size=config.train.global_batch_size, seed=0)
    first = next(iterator)
    startup = time.perf_counter() - start
    start = time.perf_counter()
    efficiency = [pipeline.packing_efficiency(next(iterator)) for _ in range(batches)]
    seconds = time.perf_counter() - start
    tokens = batches * config.train.global_batch_size * config.data.seq_len
    return startup, tokens / seconds, float(np.mean(efficiency)), first


def time_train_step(config, batch: dict, vocab_size: int, steps: int) -> float:
    """Row tokens/s of the SFT step on this process's devices (jit, donated state, no sharding)."""
    model, _ = pretrained.build_model(config.model, vocab_size)
    tx, schedule = optimizers.make_optimizer(config.optimizer, 1000)
    state = jax.jit(ts.make_init_fn(model, tx, config.data.seq_len))(jax.random.PRNGKey(0))
    step = jax.jit(sft_objective.make_train_step(model, tx, schedule, 0.0, 1), donate_argnums=(0,))
    batch = {k: jax.numpy.asarray(v) for k, v in batch.items()}
    for _ in range(2):  # compile, warm up
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    return batch["decoder_target_tokens"].size / float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=40, help="batches timed per case (after the first)")
    parser.add_argument("--steps", type=int, default=5, help="train steps timed per case")
    parser.add_argument("--no-train-step", action="store_true")
    args = parser.parse_args()
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")  # as main.py: TensorFlow only feeds data
    device = jax.devices()[0]
    print(
        f"host: {os.cpu_count()} CPU cores; train step on {jax.device_count()} x {device.device_kind} ({device.platform})"
    )
    rows = []
    for name, task, preset, dtype, batch_size, seq_len in CASES:
        config = quickstart.get_config()
        config.data.task, config.data.seq_len = task, seq_len
        config.model.preset, config.model.dtype = preset, dtype
        config.train.global_batch_size = batch_size
        startup, pipeline_tps, efficiency, batch = time_pipeline(config, args.batches)
        step_tps = float("nan")
        if not args.no_train_step:
            vocab_size = pipeline.prepare(config.data).vocab_size
            step_tps = time_train_step(config, batch, vocab_size, args.steps)
        rows.append((name, f"{batch_size} x {seq_len}", startup, pipeline_tps, efficiency, step_tps))
        print(f"  {name}: done", flush=True)
    print(f"\n{'case':<26} {'batch':>9} {'start-up s':>10} {'pipeline tok/s/host':>20} {'packing':>8} "
          f"{'train step tok/s':>17} {'headroom':>9}")  # fmt: skip
    for name, shape, startup, pipeline_tps, efficiency, step_tps in rows:
        ratio = pipeline_tps / step_tps if step_tps == step_tps else float("nan")
        print(f"{name:<26} {shape:>9} {startup:>10.1f} {pipeline_tps:>20,.0f} {100 * efficiency:>7.1f}% "
              f"{step_tps:>17,.0f} {ratio:>8.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
