#!/usr/bin/env python3
"""Runs the reference MIG sampler (yichengchen24/MIG, fetched, never committed) for parity and speed.

The reference's classes are imported from its checkout (REF, the folder holding `mig/`) and used
as they are: `MIGSampler.sample` picks, `LabelGraph` holds labels and W. Only how W gets its label
vectors differs in `synthetic` mode: the vectors come from a file instead of a sentence-transformers
model, and W is computed from them with the two lines `SimLabelGraph` uses (E @ E.T, zeroed below
the threshold, on the same device).

    # parity and speed on a synthetic pool (from make_pool.py)
    python3 reference.py synthetic --ref REF --pool DIR/pool.jsonl --vectors DIR/vectors.jsonl \
        --n 2000 --out picks.json [--batch-size 32768] [--max-seconds 120]

    # the reference's own example data, its own SimLabelGraph with a sentence-transformers model
    python3 reference.py example --ref REF --model MODEL_DIR --n 5 --out DIR

Writes JSON: picks (ids in pick order), timings, device and versions.
"""

import argparse
import json
import os
import sys
import time

import torch

FLOAT32 = torch.float32  # kept before --float64 redirects the name


def load_reference(ref):
    sys.path.insert(0, ref)
    import typing

    import torch  # noqa: F401
    import mig.data

    # mig/sampler.py annotates `Dataset[DataPoint]` where `Dataset = list[DataPoint]`, which raises
    # "not a generic class" when the module is imported (Python 3.12). An import-time shim so the
    # module loads; annotations only, no behaviour changes.
    mig.data.Dataset = typing.List
    from mig.data import DataPoint, MIGDataPoint
    from mig.label import LabelGraph, SimLabelGraph
    from mig.sampler import MIGSampler

    return DataPoint, MIGDataPoint, LabelGraph, SimLabelGraph, MIGSampler


def run_sampler(MIGSampler, graph, pool, n, batch_size, max_seconds, norm=False):
    import torch

    sampler = MIGSampler(graph, norm=norm)  # the CLI's default: norm off
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    picks = []
    first = None
    for dp in sampler.sample(pool, n, batch_size=batch_size):
        picks.append(dp.raw["id"] if "id" in dp.raw else dp.raw.get("_id"))
        if first is None:
            first = time.perf_counter() - start  # setup: vectorize, X @ P, first scan
        if max_seconds and time.perf_counter() - start > max_seconds:
            break
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    total = time.perf_counter() - start
    return picks, first, total


def synthetic(args):
    import torch

    if args.float64:
        # The reference's arithmetic at double precision: its sampler asks for float32 through
        # `.float()` and `dtype=torch.float32`; both are redirected to float64 in this process.
        torch.float32 = torch.float64
        torch.Tensor.float = torch.Tensor.double

    DataPoint, _, LabelGraph, _, MIGSampler = load_reference(args.ref)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.perf_counter()
    vectors = {}
    with open(args.vectors) as f:
        for line in f:
            r = json.loads(line)
            vectors[r["label"]] = r["vector"]
    pool = []
    with open(args.pool) as f:
        for line in f:
            r = json.loads(line)
            pool.append(DataPoint(labels=r["labels"], score=r["score"], raw={"id": r["id"]}))
    load_s = time.perf_counter() - t0

    class GivenVectorsGraph(LabelGraph):
        """SimLabelGraph with the label vectors given instead of embedded."""

        def __init__(self, dataset, threshold):
            super().__init__()
            self._threshold = threshold
            self._build_from_dataset(dataset)

        def calc_weighted_adjacency_matrix(self, label_list):
            # float32 as sentence-transformers returns (torch.float32 may be redirected; not here).
            emb = torch.tensor([vectors[l] for l in label_list], dtype=FLOAT32, device=device)
            wam = emb @ emb.T
            return wam.where(wam >= self._threshold, 0.0)

        def calc_weight(self, label1, label2):
            raise NotImplementedError

    t0 = time.perf_counter()
    graph = GivenVectorsGraph(pool, args.threshold)
    graph_s = time.perf_counter() - t0
    picks, first_s, select_s = run_sampler(MIGSampler, graph, pool, args.n, args.batch_size, args.max_seconds)
    out = {
        "picks": picks,
        "n_requested": args.n,
        "pool": len(pool),
        "labels": len(graph),
        "edges": int(((graph.wam > 0).sum().item() - len(graph)) // 2),
        "load_seconds": load_s,
        "graph_seconds": graph_s,
        "first_pick_seconds": first_s,
        "select_seconds": select_s,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "batch_size": args.batch_size,
        "float64": args.float64,
    }
    with open(args.out, "w") as f:
        json.dump(out, f)
    print(json.dumps({k: v for k, v in out.items() if k != "picks"}))


def example(args):
    """The reference's own loading (valid tags, DEITA score) and its SimLabelGraph."""
    import torch

    _, MIGDataPoint, _, SimLabelGraph, MIGSampler = load_reference(args.ref)
    MIGDataPoint.init(valid_tag_path=os.path.join(args.ref, "configs", "valid_tag_path.json"))
    pool, skipped = [], []
    # data/example.jsonl line 3 is malformed JSON (the reference's reader aborts on it): skip and say so.
    with open(os.path.join(args.ref, "data", "example.jsonl")) as f:
        for i, line in enumerate(f, 1):
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                skipped.append(i)
                continue
            dp = MIGDataPoint.from_dict(d)
            if dp:
                pool.append(dp)
    graph = SimLabelGraph(pool, embedding_model=args.model, sim_threshold=args.threshold)
    # The vectors the graph was built from, for firebrand's side of the parity test.
    emb = graph._embedding_model.encode(graph.labels, convert_to_tensor=True, normalize_embeddings=True)
    picks, _, _ = run_sampler(MIGSampler, graph, pool, args.n, 0, 0, norm=args.norm)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "pool.jsonl"), "w") as f:
        for dp in pool:
            f.write(json.dumps({"id": dp.raw["_id"], "labels": dp.labels, "score": dp.score}) + "\n")
    # The same records with their raw tags, and the part of the valid-tag list they touch: firebrand's
    # --vocab filter must arrive at the reference's labels.
    valid = set(MIGDataPoint.valid_tags)
    raw_tags = set()
    with open(os.path.join(args.out, "pool_raw.jsonl"), "w") as f:
        for dp in pool:
            tags = dp.raw["annotation"]["instag"]["content"]
            raw_tags.update(tags)
            f.write(json.dumps({"id": dp.raw["_id"], "labels": tags, "score": dp.score}) + "\n")
    with open(os.path.join(args.out, "vocab.json"), "w") as f:
        json.dump(sorted(t for t in raw_tags if t in valid), f, indent=0)
    with open(os.path.join(args.out, "vectors.jsonl"), "w") as f:
        for label, v in zip(graph.labels, emb.float().cpu().tolist()):
            f.write(json.dumps({"label": label, "vector": v}) + "\n")
    name = f"reference_t{args.threshold}{'_norm' if args.norm else ''}.json"
    with open(os.path.join(args.out, name), "w") as f:
        json.dump({"picks": picks, "skipped_lines": skipped, "labels": len(graph), "threshold": args.threshold,
                   "norm": args.norm, "edges": int(((graph.wam > 0).sum().item() - len(graph)) // 2),
                   "torch": torch.__version__,
                   "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}, f, indent=0)
    print(json.dumps({"pool": len(pool), "labels": len(graph), "picks": picks, "skipped_lines": skipped}))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("synthetic")
    s.add_argument("--ref", required=True)
    s.add_argument("--pool", required=True)
    s.add_argument("--vectors", required=True)
    s.add_argument("--n", type=int, required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--threshold", type=float, default=0.9)
    s.add_argument("--batch-size", type=int, default=0)
    s.add_argument("--max-seconds", type=float, default=0)
    s.add_argument("--float64", action="store_true", help="run the sampler in double precision")
    e = sub.add_parser("example")
    e.add_argument("--ref", required=True)
    e.add_argument("--model", required=True)
    e.add_argument("--n", type=int, default=5)
    e.add_argument("--threshold", type=float, default=0.9)
    e.add_argument("--norm", action="store_true", help="divide scores by the number of labels")
    e.add_argument("--out", required=True)
    args = ap.parse_args()
    synthetic(args) if args.mode == "synthetic" else example(args)


if __name__ == "__main__":
    main()
