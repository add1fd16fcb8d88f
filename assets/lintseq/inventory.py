"""A small inventory: items, stock moves and a report."""

import json
from collections import defaultdict
from dataclasses import dataclass, field

LOW_STOCK = 3
CATEGORIES = [
    "tools",
    "parts",
    "paint",
]


@dataclass
class Item:
    sku: str
    name: str
    category: str = "parts"
    tags: list = field(default_factory=list)

    def label(self):
        return f"{self.sku}: {self.name} ({self.category})"


class Inventory:
    """Stock levels per item, with a history of moves."""

    def __init__(self):
        self.items = {}
        self.stock = defaultdict(int)
        self.history = []

    def add(self, item, count=0):
        if item.category not in CATEGORIES:
            raise ValueError(f"unknown category {item.category!r}")
        self.items[item.sku] = item
        self.move(item.sku, count)

    def move(self, sku, delta):
        if sku not in self.items:
            raise KeyError(sku)
        self.stock[sku] += delta
        self.history.append((sku, delta))
        return self.stock[sku]

    def low(self):
        return sorted(sku for sku, n in self.stock.items() if n <= LOW_STOCK)

    def by_category(self):
        groups = defaultdict(list)
        for sku, item in self.items.items():
            groups[item.category].append(sku)
        return {k: sorted(v) for k, v in groups.items()}

    def to_json(self):
        rows = [
            {"sku": sku, "count": self.stock[sku], "label": item.label()}
            for sku, item in sorted(self.items.items())
        ]
        return json.dumps(rows, indent=2)


def load(lines):
    inv = Inventory()
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            sku, name, category, count = line.split(",")
            inv.add(Item(sku, name, category), int(count))
        except ValueError as err:
            print(f"line {number}: {err}")
    return inv


if __name__ == "__main__":
    inventory = load(["a1,hammer,tools,5", "b2,bolt,parts,2", "bad line"])
    print(inventory.low(), inventory.by_category())
    print(inventory.to_json())
