"""Block lists and depths written for the papers' tower, scaled to the tower a run has.

DualPrompt, CODA-Prompt and MaPLe name transformer blocks of ViT-B (12 blocks in each tower): DualPrompt's
general prompts in blocks 0-1 and expert prompts in 2-4, CODA-Prompt's prompts in 0-4, MaPLe's in the first
9. Their YAMLs keep those values in ``method.paper_blocks`` with the tower they are written for (``of: 12``)
and leave the method's own keys (``g_layers``, ``e_layers``, ``layers``, ``depth``) null; a null key takes
the paper's value scaled to the run's tower by the rule below, a given key is the run's own blocks, used as
given (and refused if the tower lacks one of them).

The rule (``scale_block_lists``). A block b of an N-block tower spans the depths [b/N, (b+1)/N). The blocks
the lists name fall into *runs*: maximal stretches of consecutive blocks held by the same lists (DualPrompt:
0-1 general, 2-4 expert; CODA-Prompt: 0-4; a depth d: 0..d-1), with stretches held by none between them. Each
run's ends, cut points p in 0..N, move to the nearest block boundary of the n-block tower,
``round(p * n / N)`` with halves up; a held run that would get no block keeps one, and the runs after it
move along by one (within the tower); each listed block takes the blocks of its own span inside its run's.
So the proportions stay (CODA-Prompt's 5 of 12 blocks: 2 of 4, 1 of 2; MaPLe's 9 of 12: 2 of 3, 2 of 2;
a depth d: max(1, round(d * n / N))), the lists keep their order along the tower and stay apart where they
were apart (DualPrompt's general prompts first, the expert prompts right after: [0] and [1] on 4 blocks and
on 2), and on a tower of N blocks every list is unchanged. Only a tower with fewer blocks than the lists have
runs makes them share blocks (then each run is clamped into the tower).
"""

from __future__ import annotations

import logging
from typing import Mapping, Optional, Sequence

from clprompt.errors import ConfigValueError

log = logging.getLogger(__name__)

PAPER_TOWER = 12   # ViT-B's blocks per tower, what the papers' lists are written for


def check_layers(name: str, layers, depth: int) -> list[int]:
    """``layers`` as distinct block indices of a ``depth``-block tower (the run's own blocks, as given). An empty
    list passes here: whether a method may leave a list empty is the method's to say."""
    items = [] if layers is None else layers
    if isinstance(items, (str, bytes, int, float)):
        items = [items]   # a single value: refused below unless it is a list
        listed = False
    else:
        items, listed = list(items), True
    whole = [item for item in items if isinstance(item, int) and not isinstance(item, bool)]
    if (not listed or len(whole) != len(items) or any(not 0 <= layer < depth for layer in whole)
            or len(set(whole)) != len(whole)):
        fitting = sorted({layer for layer in whole if 0 <= layer < depth}) or [depth - 1]
        shown = [int(item) if isinstance(item, int) and not isinstance(item, bool) else item for item in items] \
            if listed else layers
        raise ConfigValueError(f"method.{name}={shown}: distinct block indices in 0..{depth - 1} (this image tower has "
                               f"{depth} blocks; the papers' ViT-B has 12), e.g. method.{name}=[{','.join(map(str, fitting))}]")
    return [int(layer) for layer in whole]


def scale_cut(point: int, of: int, blocks: int) -> int:
    """A cut point between blocks (0..of) of an ``of``-block tower on a ``blocks``-block one: the nearest
    boundary, halves up (integer arithmetic: floor(point * blocks / of + 1/2))."""
    return (2 * point * blocks + of) // (2 * of)


def scale_block_lists(lists: Mapping[str, Sequence[int]], of: int, blocks: int) -> dict[str, list[int]]:
    """Block lists written for an ``of``-block tower, scaled together to a ``blocks``-block tower (the rule of
    this module's docstring): name -> blocks, each list in its own order, without repeats."""
    lists = {name: [int(b) for b in values] for name, values in lists.items()}
    holders = [frozenset(name for name, values in lists.items() if b in values) for b in range(of)]
    runs, start = [], 0                                   # (first block, end, held) over 0..of
    for b in range(1, of + 1):
        if b == of or holders[b] != holders[start]:
            runs.append((start, b, bool(holders[start])))
            start = b
    spans, position = {}, 0                               # run start -> (first, end, shift) on the scaled tower
    for first, end, held in runs:
        scaled_first = max(scale_cut(first, of, blocks), position)
        scaled_end = max(scale_cut(end, of, blocks), scaled_first + (1 if held else 0))
        spans[first] = (scaled_first, scaled_end, scaled_first - scale_cut(first, of, blocks))
        position = scaled_end
    run_of = {b: first for first, end, _ in runs for b in range(first, end)}
    scaled = {}
    for name, values in lists.items():
        out = []
        for b in values:
            first, end, shift = spans[run_of[b]]
            first, end = min(first, blocks - 1), min(max(end, first + 1), blocks)   # clamped into the tower
            low = min(max(scale_cut(b, of, blocks) + shift, first), end - 1)
            high = max(low + 1, min(scale_cut(b + 1, of, blocks) + shift, end))
            out += [block for block in range(low, high) if block not in out]
        scaled[name] = out
    return scaled


def _paper_values(paper, keys: Sequence[str], what: str) -> tuple[int, dict]:
    """(of, {key: value}) of ``method.paper_blocks``, checked."""
    if paper is None:
        raise ConfigValueError(f"method.{keys[0]} is null and method.paper_blocks is null: give {what} of this "
                               f"tower (e.g. method.{keys[0]}=...) or method.paper_blocks with of and "
                               f"{', '.join(keys)}")
    paper = dict(paper)
    of = paper.get("of")
    if not isinstance(of, int) or isinstance(of, bool) or of < 1:
        raise ConfigValueError(f"method.paper_blocks.of={of!r}: give the block count of the tower the paper's "
                               f"values are written for (ViT-B: {PAPER_TOWER})")
    unknown = sorted(set(paper) - {"of", *keys})
    if unknown:
        raise ConfigValueError(f"method.paper_blocks.{unknown[0]} is not a key of method.paper_blocks; its keys: of, "
                               f"{', '.join(keys)}")
    missing = [key for key in keys if key not in paper]
    if missing:
        raise ConfigValueError(f"method.paper_blocks has no {missing[0]}: give method.paper_blocks.{missing[0]}")
    return of, {key: paper[key] for key in keys}


def resolve_block_lists(owner: str, given: Mapping[str, Optional[Sequence[int]]], paper, blocks: int,
                        tower: str = "image") -> tuple[dict[str, list[int]], Optional[dict]]:
    """The block lists a method uses on a ``blocks``-block tower: a given list as it is (refused, with
    ``check_layers``' message, if the tower lacks a block), a null one the paper's scaled (all the paper's
    lists together, so their layout stays). Returns (name -> blocks, the paper's values used or None); logs
    one line when scaling changed a paper's list."""
    used = {name: check_layers(name, values, blocks) for name, values in given.items() if values is not None}
    missing = [name for name, values in given.items() if values is None]
    if not missing:
        return used, None
    of, values = _paper_values(paper, list(given), "block indices")
    lists = {}
    for name, value in values.items():
        blocks_listed = [int(b) for b in (value or [])]
        if any(not 0 <= b < of for b in blocks_listed) or len(set(blocks_listed)) != len(blocks_listed):
            raise ConfigValueError(f"method.paper_blocks.{name}={blocks_listed}: distinct block indices in 0..{of - 1} "
                                   f"(method.paper_blocks.of={of})")
        lists[name] = blocks_listed
    scaled = scale_block_lists(lists, of, blocks)
    for name in missing:
        used[name] = scaled[name]
    used = {name: used[name] for name in given}
    if any(scaled[name] != lists[name] for name in missing):
        log.info("%s: the paper's blocks (%s of %d) scaled to this %d-block %s tower: %s", owner,
                 ", ".join(f"{name} {lists[name]}" for name in missing), of, blocks, tower,
                 ", ".join(f"{name} {used[name]}" for name in missing))
    return used, {"of": of, **{name: lists[name] for name in missing}}


def resolve_depth(owner: str, depth: Optional[int], paper, blocks: int, tower: str) -> tuple[int, Optional[dict]]:
    """A depth (the first ``depth`` blocks): a given one as it is (refused beyond 1..blocks), null the paper's
    scaled: max(1, round(d * blocks / of)), the first d blocks' run by the rule. Returns (depth, the paper's
    values used or None); logs one line when scaling changed the paper's depth."""
    if depth is not None:
        if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= blocks:
            raise ConfigValueError(f"method.depth={depth}: between 1 and {blocks} (the blocks of the {tower})")
        return depth, None
    of, values = _paper_values(paper, ["depth"], "a depth")
    paper_depth = values["depth"]
    if not isinstance(paper_depth, int) or isinstance(paper_depth, bool) or not 1 <= paper_depth <= of:
        raise ConfigValueError(f"method.paper_blocks.depth={paper_depth!r}: between 1 and {of} "
                               f"(method.paper_blocks.of={of})")
    scaled = len(scale_block_lists({"depth": range(paper_depth)}, of, blocks)["depth"])
    if scaled != paper_depth:
        log.info("%s: the paper's depth (%d of %d blocks) scaled to the %s's %d blocks: depth %d", owner,
                 paper_depth, of, tower, blocks, scaled)
    return scaled, {"of": of, "depth": paper_depth}
