# Builds the offline English corpus of the localist experiment: prose paragraphs of the README.md
# files of the crates in the local cargo registry (~/.cargo/registry/src), code blocks, tables,
# lists and link-heavy lines removed; 200-1200 characters each; deduplicated; the last 100 held
# out. Writes train.jsonl and test.jsonl (chat rows with one assistant message) into argv[1].
import glob, json, os, re, sys

out_dir = sys.argv[1]
files = sorted(glob.glob(os.path.expanduser("~/.cargo/registry/src/*/*/README.md")))
seen, paras = set(), []
for f in files:
    text = re.sub(r"```.*?```", "", open(f, errors="ignore").read(), flags=re.S)
    for p in re.split(r"\n\s*\n", text):
        p = " ".join(p.split())
        if not 200 <= len(p) <= 1200 or p.count("|") > 2 or "http" in p:
            continue
        if p.startswith(("#", "[", "<", "!", "*", "-", ">")):
            continue
        if sum(c.isalpha() for c in p) < 0.7 * len(p) or p in seen:
            continue
        seen.add(p)
        paras.append(p)
os.makedirs(out_dir, exist_ok=True)
for name, part in [("train", paras[:-100]), ("test", paras[-100:])]:
    with open(os.path.join(out_dir, f"{name}.jsonl"), "w") as w:
        for p in part:
            w.write(json.dumps({"messages": [{"role": "assistant", "content": p}]}) + "\n")
print(f"{len(files)} READMEs, {len(paras)} paragraphs, {sum(map(len, paras))} characters")
