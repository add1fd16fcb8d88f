import heapq
from typing import Dict, List, Tuple

Graph = Dict[str, List[Tuple[str, int]]]


def dijkstra(graph: Graph, start: str) -> Dict[str, int]:
    """Shortest distances from start."""
    dist = {start: 0}
    queue = [(0, start)]
    while queue:
        d, node = heapq.heappop(queue)
        if d > dist.get(node, float("inf")):
            continue
        for neighbour, weight in graph.get(node, []):
            candidate = d + weight
            if candidate < dist.get(neighbour, float("inf")):
                dist[neighbour] = candidate
                heapq.heappush(queue, (candidate, neighbour))
    return dist


def topological_order(graph: Graph) -> List[str]:
    seen = set()
    order = []

    def visit(node):
        if node in seen:
            return
        seen.add(node)
        for child, _ in graph.get(node, []):
            visit(child)
        order.append(node)

    for node in graph:
        visit(node)
    return order[::-1]


def components(graph: Graph):
    parent = {n: n for n in graph}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, edges in graph.items():
        for b, _ in edges:
            parent.setdefault(b, b)
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[ra] = rb
    groups = {}
    for n in parent:
        groups.setdefault(find(n), []).append(n)
    return sorted(sorted(g) for g in groups.values())


g = {"a": [("b", 1), ("c", 4)], "b": [("c", 2)], "c": [], "x": [("y", 1)]}
print(dijkstra(g, "a"), topological_order(g), components(g))
