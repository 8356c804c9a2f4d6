#!/usr/bin/env python3
"""Checks that the modules inside each crate of the workspace form no dependency cycle.

Cargo already refuses a cycle among crates; this keeps the same rule one level down. A module's
edges are the `crate::<module>` paths its files name (in `use` lines, paths and grouped
`use crate::{..}` lists), counted at the crate's top-level modules (`src/<module>.rs` or
`src/<module>/`). Prints each crate's module graph with `--graph`; exits 1 naming every cycle.
"""

import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PATH = re.compile(r"\bcrate::(\w+)")
GROUP = re.compile(r"\buse\s+crate::\{(.*?)\};", re.S)
GROUP_HEAD = re.compile(r"(?:^|[{,])\s*(\w+)")


def crate_roots():
    """Each workspace member's source folder, by package name."""
    members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    for member in members:
        manifest = tomllib.loads((ROOT / member / "Cargo.toml").read_text())
        src = ROOT / member / "src"
        if src.is_dir():
            yield manifest["package"]["name"], src


def top_module(src: pathlib.Path, file: pathlib.Path):
    part = file.relative_to(src).parts[0]
    return part.removesuffix(".rs")


def graph(src: pathlib.Path):
    files = [f for f in src.rglob("*.rs") if "bin" not in f.relative_to(src).parts[:-1]]
    modules = {top_module(src, f) for f in files} - {"lib", "main"}
    edges = {m: set() for m in modules}
    for file in files:
        here = top_module(src, file)
        if here not in modules:
            continue
        text = file.read_text()
        named = set(PATH.findall(text))
        for group in GROUP.findall(text):
            named.update(GROUP_HEAD.findall(group))
        edges[here].update(m for m in named if m in modules and m != here)
    return edges


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def main():
    show = "--graph" in sys.argv
    failed = False
    for name, src in crate_roots():
        edges = graph(src)
        if show:
            print(f"{name}:")
            for module in sorted(edges):
                print(f"  {module} -> {', '.join(sorted(edges[module])) or '-'}")
        for component in cycles(edges):
            failed = True
            print(f"{name}: modules depend on each other in a circle: {', '.join(component)}")
    if failed:
        sys.exit(1)
    print("no module cycle in any crate")


if __name__ == "__main__":
    main()
