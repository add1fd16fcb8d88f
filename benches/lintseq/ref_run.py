"""Runs the LintSeq reference (upiterbarg/lintseq, src/data_gen/lintseq.py + src/utils.py, unchanged)
on a list of files, as its driver (generate_with_lintseq.py) calls it, and writes one JSON line per
trajectory: {"file", "sample", "edit_path", "seconds"} (or "error" when the reference raised, which its
driver swallows).

Usage: python ref_run.py REF_SRC FILE_LIST OUT.jsonl WORKERS SAMPLES
REF_SRC is a folder with the reference's utils.py and lintseq.py (copied there by bench.sh).
The reference imports torch only for seeding: a stub module stands in (torch is not needed to sample).
"""
import json
import os
import sys
import time
import types
import zlib
from concurrent.futures import ProcessPoolExecutor


def setup(ref_src):
    torch = types.ModuleType("torch")
    torch.manual_seed = lambda s: None
    torch.no_grad = lambda: (lambda f: f)
    torch.cuda = types.SimpleNamespace(is_available=lambda: False, manual_seed_all=lambda s: None)
    sys.modules["torch"] = torch
    # lintseq.py derives its import path from the working directory's "lintseq" component.
    os.chdir(ref_src)
    sys.path.insert(0, ref_src)


def work(args):
    ref_src, path, samples, seed = args
    setup(ref_src)
    import numpy as np
    import random
    from utils import strip_chain_of_thought, inflate_edit_path
    from lintseq import lintseq_backward_sampling_pythonic

    code = strip_chain_of_thought(open(path).read())
    out = []
    for k in range(samples):
        np.random.seed((seed * 1000003 + zlib.crc32(path.encode()) + k) % 2**32)
        random.seed(k)
        t0 = time.perf_counter()
        try:
            res = lintseq_backward_sampling_pythonic(
                code,
                children_per_round=1,
                top_k=1,
                max_population_size=1,
                max_depth=512,
                indent_bias_sampling_factor=1,
                ignore_imports=False,
                ignore_comments=True,
                ignore_global_defs=True,
                verbose=False,
                ignore_init_errors=False,
            )
            if res is None:
                rec = {"error": "no candidate lines"}
            else:
                _, diffs = inflate_edit_path(code, res[0][0])
                rec = {"edit_path": diffs}
        except Exception as e:  # the reference driver's bare `except: continue`
            rec = {"error": f"{type(e).__name__}: {e}"}
        rec.update(file=path, sample=k, seconds=time.perf_counter() - t0)
        out.append(rec)
    return out


def main():
    ref_src, file_list, out_path, workers, samples = sys.argv[1:6]
    ref_src = os.path.abspath(ref_src)
    files = [l.strip() for l in open(file_list) if l.strip()]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(int(workers)) as ex, open(out_path, "w") as f:
        for recs in ex.map(work, [(ref_src, p, int(samples), 0) for p in files]):
            for r in recs:
                f.write(json.dumps(r) + "\n")
    print(f"reference: {len(files)} files in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
