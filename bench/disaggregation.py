"""Disaggregated decode: the trainer decoding on its own node vs on a CPU-only data node, one run.

A local two-node Ray cluster on this machine (``ray.cluster_utils.Cluster``, Ray's own tool for
several nodes on one host: each node is its own raylet with its own logical CPUs): a head node
for the Train workers and a second node with ``--data-cpus`` CPUs and the label
``node-group=cpu-data``. The real trainer (``trainer.main.run``, preset ``cpu-small``) trains the
same synthetic corpus twice, one run after the other, in this process:

  (a) ``local``: every Train worker reads and decodes its own shards (``input="local"``) on the
      CPUs Ray Train reserved for it on the head node;
  (b) ``data-node``: Ray Data read+decode tasks pinned to the labelled node (``input="ray_data"``,
      ``decode_nodes="node-group=cpu-data"``); the Train workers, kept off that node, only
      bucket, collate and train.

Printed side by side: where decode ran (Ray's state API: the node of every ``ReadWebDataset``
task and of every Train worker), the data-wait share and clips/s of the epochs after the first
(the first carries Ray Data's start-up; from the run's ``metrics.json``), and wall time.

Caveat printed with the numbers: both nodes share this machine's cores, so (b) does not add
hardware; what it shows is placement, and the trainer no longer spending its reserved CPUs on
decoding (decode runs in parallel with the step instead of inside ``next(batch)``).

    python bench/disaggregation.py                   # 600 synthetic clips at 16 kHz, 3 epochs each
    python bench/disaggregation.py --clips 1500 --epochs 4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import tempfile
import time
from collections import Counter

from loader import prepare  # bench/loader.py: the synthetic corpus, prepared once with data_prep

from runtime import storage

LABEL_KEY, LABEL_VALUE = "node-group", "cpu-data"
LIMIT = 10_000  # the state API's maximum page


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cluster(head_cpus: int, data_cpus: int, store_mib: int):
    """Head node (Train workers, the dashboard for the state API) + a labelled CPU-only data node."""
    from ray.cluster_utils import Cluster

    port, store = free_port(), store_mib * 2**20  # Cluster's default store is 150 MiB: Ray Data backpressures
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": head_cpus, "object_store_memory": store, "include_dashboard": True,
        "dashboard_host": "127.0.0.1", "dashboard_port": port})
    data = cluster.add_node(num_cpus=data_cpus, object_store_memory=store, labels={LABEL_KEY: LABEL_VALUE})
    return cluster, f"http://127.0.0.1:{port}", {cluster.head_node.node_id: "head", data.node_id: "data"}


def state_snapshot(dashboard: str) -> tuple[set, set]:
    from ray.util.state import list_actors, list_tasks

    return ({t.task_id for t in list_tasks(dashboard, limit=LIMIT, raise_on_missing_output=False)},
            {a.actor_id for a in list_actors(dashboard, limit=LIMIT, raise_on_missing_output=False)})


def placement(dashboard: str, before: tuple[set, set], node_names: dict) -> dict:
    """Nodes of the read+decode tasks and the Train workers created since ``before``."""
    from ray.util.state import list_actors, list_tasks

    time.sleep(3)  # the state API trails task events by a second or two
    reads: dict[str, str] = {}
    for t in list_tasks(dashboard, limit=LIMIT, detail=True, raise_on_missing_output=False):
        if "ReadWebDataset" in t.name and t.task_id not in before[0] and t.node_id:
            reads[t.task_id] = node_names.get(t.node_id, t.node_id[:8])
    workers = [node_names.get(a.node_id, str(a.node_id)[:8])
               for a in list_actors(dashboard, limit=LIMIT, detail=True, raise_on_missing_output=False)
               if "TrainWorker" in a.class_name and a.actor_id not in before[1]]
    return {"read_tasks": dict(Counter(reads.values())), "train_workers": dict(Counter(workers))}


def train(data: str, out: str, name: str, args, address: str, *, ray_data: bool) -> dict:
    from trainer.config import preset
    from trainer.main import run

    cfg = preset("cpu-small")
    loader = dataclasses.replace(
        cfg.loader, select_split="", eval_split="(none)",  # training input only: no evaluation passes
        shuffle_buffer=args.shuffle_buffer,
        input="ray_data" if ray_data else "local", decode_cpus=1.0,
        decode_nodes=f"{LABEL_KEY}={LABEL_VALUE}" if ray_data else "")
    cfg = dataclasses.replace(cfg, data=data, out=out, name=name, workers=args.workers, epochs=args.epochs,
                              cpus_per_worker=args.head_cpus / args.workers, loader=loader)
    summary = run(cfg, address=address, progress=False)
    epochs = json.loads(storage.read_text(storage.join(summary["run_dir"], "metrics.json")))["epochs"]
    return {"wall_s": summary["seconds"], "epochs": epochs}


def steady(epochs: list[dict]) -> dict:
    """The epochs after the first (all of them when there is only one)."""
    later = epochs[1:] or epochs
    clips = sum(e["train_clips"] for e in later)
    # clips_per_s = clips / mean rank step time: invert to add the epochs' times up
    seconds = sum(e["train_clips"] / e["clips_per_s"] for e in later if e["clips_per_s"])
    wait = sum(e["data_wait_fraction"] * e["train_clips"] / e["clips_per_s"] for e in later if e["clips_per_s"])
    return {"clips_per_epoch": clips / len(later), "clips_per_s": clips / seconds, "data_wait": wait / seconds,
            "first_clips_per_s": epochs[0]["clips_per_s"], "first_data_wait": epochs[0]["data_wait_fraction"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="shards URL (default: synthetic corpus prepared under --work)")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "weaksound-bench"),
                    help="folder for the corpus and the runs (default: $TMPDIR/weaksound-bench)")
    ap.add_argument("--clips", type=int, default=600, help="synthetic clips to prepare (default: 600)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is reported apart (default: 3)")
    ap.add_argument("--workers", type=int, default=2, help="Train workers (default: 2)")
    ap.add_argument("--head-cpus", type=int, default=2,
                    help="CPUs of the head node, all reserved by the Train workers (default: 2)")
    ap.add_argument("--data-cpus", type=int, default=1, help="CPUs of the data node (default: 1)")
    ap.add_argument("--shuffle-buffer", type=int, default=32,
                    help="rows in each rank's shuffle buffer; the Ray path fills it before every epoch's first "
                         "batch, and the preset's 200 would be most of a rank's epoch on a small corpus (default: 32)")
    ap.add_argument("--store-mib", type=int, default=1024, help="object store per node, MiB (default: 1024)")
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throw-away cluster on this machine only
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")  # per-epoch reports cost ~2 s otherwise

    data = args.data or prepare(os.path.join(args.work, f"loader-{args.clips}-16000"), args.clips, 16000)
    out = os.path.join(args.work, "disaggregation-runs")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    t0 = time.perf_counter()
    cluster, dashboard, node_names = start_cluster(args.head_cpus, args.data_cpus, args.store_mib)
    print(f"two-node Ray cluster up in {time.perf_counter() - t0:.1f} s: head {args.head_cpus} CPUs (Train workers), "
          f"data node {args.data_cpus} CPUs labelled {LABEL_KEY}={LABEL_VALUE}; this machine has "
          f"{os.cpu_count()} cores, which BOTH nodes share", flush=True)
    results = {}
    try:
        for tag, ray_data in (("local", False), ("data-node", True)):
            before = state_snapshot(dashboard)
            results[tag] = train(data, out, f"disagg-{tag}-{stamp}", args, cluster.address, ray_data=ray_data)
            results[tag]["placement"] = placement(dashboard, before, node_names)
    finally:
        import ray

        ray.shutdown()  # this process joined the cluster in trainer.main.run
        cluster.shutdown()

    print(f"\nshards: {data}; {args.workers} Train workers x {args.head_cpus / args.workers:g} CPUs on the head, "
          f"{args.epochs} epochs, preset cpu-small, shuffle buffer {args.shuffle_buffer} rows")
    head = (f"{'run':<11} {'decode ran in':<38} {'clips/s':>8} {'data wait':>10} {'clips/s':>8} {'data wait':>10} "
            f"{'clips/ep':>9} {'wall s':>7}")
    print(f"{'':<50}{'--- epochs 2.. ---':>20} {'--- epoch 1 ---':>19}")
    print(head)
    for tag, r in results.items():
        s, p = steady(r["epochs"]), r["placement"]
        where = ("Train workers on " + ", ".join(f"{n} x{c}" for n, c in p["train_workers"].items())
                 if tag == "local" else
                 "read tasks on " + ", ".join(f"{n} x{c}" for n, c in p["read_tasks"].items()))
        print(f"{tag:<11} {where:<38} {s['clips_per_s']:>8.1f} {100 * s['data_wait']:>9.0f}% "
              f"{s['first_clips_per_s']:>8.1f} {100 * s['first_data_wait']:>9.0f}% "
              f"{s['clips_per_epoch']:>9.0f} {r['wall_s']:>7.1f}")
        print(f"{'':<11} Train workers: {p['train_workers']}; ReadWebDataset tasks: {p['read_tasks'] or 'none'}")
    a, b = steady(results["local"]["epochs"]), steady(results["data-node"]["epochs"])
    print(f"\ndata-node / local: clips/s x{b['clips_per_s'] / a['clips_per_s']:.2f}, data wait "
          f"{100 * a['data_wait']:.0f}% -> {100 * b['data_wait']:.0f}%")
    print(f"NOTE: both nodes run on the same {os.cpu_count()} cores. The data node adds {args.data_cpus} logical "
          "CPU(s), not hardware: the difference shown is placement plus the Train workers no longer decoding on "
          "their reserved CPUs (decode overlaps the step instead of running inside next(batch)). On a real "
          "cluster the data node's cores are extra.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
