"""Writes a prompt/completion JSONL of Python source from this interpreter's standard library: a
corpus large enough that 50 steps of 16 packed 1024-token rows read each row once (the quickstart
chat data is 7 rows, which a run memorises). Files are read in sorted order and cut at line
boundaries into pieces of about --chars characters, so the output is a pure function of the
standard library's sources.
Usage: code_corpus.py OUT.jsonl [--chars 3000] [--total 6000000]"""
import argparse, json, os, sysconfig

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--chars", type=int, default=3000)
ap.add_argument("--total", type=int, default=6_000_000)
a = ap.parse_args()
root = sysconfig.get_paths()["stdlib"]
files = sorted(
    os.path.join(d, f)
    for d, dirs, fs in os.walk(root)
    if "site-packages" not in d and "test" not in os.path.relpath(d, root).split(os.sep)
    for f in fs
    if f.endswith(".py")
)
written = rows = 0
with open(a.out, "w") as out:
    for path in files:
        try:
            text = open(path, encoding="utf-8").read()
        except (UnicodeDecodeError, OSError):
            continue
        piece, part = [], 0
        for line in text.splitlines(keepends=True) + [None]:
            if line is not None:
                piece.append(line)
            size = sum(map(len, piece))
            if piece and (line is None or size >= a.chars):
                rel = os.path.relpath(path, root)
                out.write(json.dumps({"prompt": f"{rel}, part {part}:", "completion": "".join(piece)}) + "\n")
                written, rows, part, piece = written + size, rows + 1, part + 1, []
        if written >= a.total:
            break
print(f"{rows} rows, {written:,} characters from {len(files)} files under {root}")
