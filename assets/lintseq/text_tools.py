import re
import sys

WORD = re.compile(r"[A-Za-z']+")
STOP = {"the", "a", "an", "and", "of"}


class Counter:
    total = 0

    def __init__(self, text):
        self.words = [w.lower() for w in WORD.findall(text)]
        Counter.total += len(self.words)

    def counts(self, skip_stop=True):
        out = {}
        for w in self.words:
            if skip_stop and w in STOP:
                continue
            out[w] = out.get(w, 0) + 1
        return out

    def top(self, n=3):
        ranked = sorted(self.counts().items(), key=lambda kv: (-kv[1], kv[0]))
        return ranked[:n]

    @staticmethod
    def wrap(text, width=20):
        lines, line = [], ""
        for word in text.split():
            if len(line) + len(word) + 1 > width and line:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        if line:
            lines.append(line)
        return lines


def caesar(text, shift):
    def rotate(ch):
        if not ch.isalpha():
            return ch
        base = ord("a") if ch.islower() else ord("A")
        return chr((ord(ch) - base + shift) % 26 + base)

    return "".join(map(rotate, text))


def main(argv):
    text = " ".join(argv[1:]) or "the quick brown fox jumps over the lazy dog and the cat"
    c = Counter(text)
    print(c.top(), Counter.total)
    print(Counter.wrap(text))
    secret = caesar(text, 3)
    assert caesar(secret, -3) == text
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
