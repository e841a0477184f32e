"""Is the corpus's ground truth articulated right? A table per phoneme group, and its targets.

Every utterance of a synthetic corpus has exact phoneme timing (``manifest.json``), its
vertices and blendshape weights. For each phoneme segment this module measures, on the
frames the segment covers:

- ``gap``: peak lip gap in mm (upper minus lower lip midline height, relative to the rest
  pose; :func:`regions.lip_gap`), and ``gap_rel``, that peak over the utterance's
  95th-percentile gap;
- ``min_gap_rel``: the smallest gap over the segment's frames +-1 frame, over the same
  95th percentile (a /p b m/ is *closed* when it is below 0.25, as in the real-speech
  benchmark);
- ``jaw``: peak ``jawOpen`` weight;
- ``rounding``: peak narrowing of the mouth (1 - mouth width / rest width; positive is
  narrower, i.e. rounded or protruded lips), and ``spread``: its smallest value.

Segments are pooled into the groups of ``articulation_targets.json`` (beside this file),
whose ``targets`` state what the phonetics demand (open vowels open the jaw, /p b m/ shut
the lips, a vowel next to a bilabial still opens, rounded vowels narrow the mouth, ...).
:func:`check` returns the targets a table misses; ``avtalk synth`` writes the table into
the corpus (``articulation.json``) and warns about every miss, and a test builds a corpus
and requires none.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from talkinghead_cli.data.synthetic.regions import lip_gap, lip_midline, mouth_loop

TARGETS_FILE = Path(__file__).with_name("articulation_targets.json")
BILABIALS = ("P", "B", "M")


def load_targets(path: str | Path | None = None) -> dict:
    """The groups and targets (see the ``_doc`` in the JSON file)."""
    return json.loads(Path(path or TARGETS_FILE).read_text())


def segment_frames(start: float, end: float, fps: float, num_frames: int) -> slice:
    """Frames whose time f / fps lies in [start, end); the nearest frame for a shorter segment."""
    f0 = int(np.ceil(start * fps - 1e-9))
    f1 = int(np.ceil(end * fps - 1e-9))
    if f1 <= f0:
        f0 = int(round(0.5 * (start + end) * fps))
        f1 = f0 + 1
    return slice(min(max(f0, 0), num_frames - 1), min(max(f1, 1), num_frames))


def segment_measures(segments: list, verts: np.ndarray, template: np.ndarray, fps: float,
                     midline: tuple[np.ndarray, np.ndarray], loop: np.ndarray,
                     jaw: np.ndarray | None = None) -> list[dict]:
    """Per-segment articulation figures of one utterance.

    Args:
        segments: [(start_s, end_s, ARPAbet or SIL)].
        verts: (T, V, 3) the utterance's vertices in metres.
        template: (V, 3) its neutral face.
        midline: (upper, lower) lip midline vertex indices.
        loop: the mouth opening's vertex indices (for the mouth width).
        jaw: (T,) jawOpen weights, or None.
    Returns:
        One dict per non-silent segment: phoneme, dur, gap (mm), gap_rel, min_gap_rel, jaw,
        rounding, spread, next_to_bilabial.
    """
    t = len(verts)
    upper, lower = midline
    gap = (lip_gap(verts, upper, lower) - lip_gap(template[None], upper, lower)[0]) * 1000.0
    p95 = max(float(np.percentile(gap, 95)), 1e-6)
    rest_w = float(np.ptp(template[loop, 0]))
    narrow = 1.0 - np.ptp(verts[:, loop, 0], axis=1) / rest_w
    out = []
    for i, (a, b, ph) in enumerate(segments):
        if ph == "SIL":
            continue
        fr = segment_frames(a, b, fps, t)
        wide = slice(max(fr.start - 1, 0), min(fr.stop + 1, t))
        near = [segments[j][2] for j in (i - 1, i + 1) if 0 <= j < len(segments)]
        out.append({
            "phoneme": ph, "dur": float(b - a), "gap": float(gap[fr].max()), "gap_rel": float(gap[fr].max() / p95),
            "min_gap_rel": float(gap[wide].min() / p95),
            "jaw": float(jaw[fr].max()) if jaw is not None else float("nan"),
            "rounding": float(narrow[fr].max()), "spread": float(narrow[fr].min()),
            "next_to_bilabial": any(p in BILABIALS for p in near)})
    return out


def corpus_measures(root: str | Path, rig, limit: int | None = None) -> list[dict]:
    """:func:`segment_measures` over the utterances of a synthetic corpus (all splits).

    Only the lip and mouth-loop vertices are needed: they are posed from the utterance's
    blendshape weights (the corpus's vertices are ``rig.pose(weights, template)``), which
    reads kilobytes instead of the full vertex files; a corpus without weights is read from
    its vertices.
    """
    import pickle

    root = Path(root)
    manifest = json.loads((root / "manifest.json").read_text())
    with open(root / "templates.pkl", "rb") as f:
        templates = pickle.load(f)
    fps = float(manifest.get("fps", 30))
    (upper, lower), loop = lip_midline(rig), mouth_loop(rig)
    idx = np.concatenate([upper, lower, loop])
    sub_mid = (np.arange(len(upper)), len(upper) + np.arange(len(lower)))
    sub_loop = len(upper) + len(lower) + np.arange(len(loop))
    basis = rig.basis[:, idx].reshape(len(rig.names), -1)  # (K, n * 3)
    j = rig.names.index("jawOpen") if "jawOpen" in rig.names else None
    rows = []
    for entry in manifest["utterances"][:limit]:
        uid, t = entry["id"], entry["num_frames"]
        template = np.asarray(templates[entry["subject"]], np.float32)[idx]
        bs = root / "blendshapes_npy" / f"{uid}.npy"
        if bs.exists():
            weights = np.load(bs)
            verts = template[None] + (weights @ basis).reshape(t, -1, 3)
            jaw = weights[:, j] if j is not None else None
        else:
            verts = np.load(root / "vertices_npy" / f"{uid}.npy", mmap_mode="r").reshape(t, -1, 3)[:, idx]
            jaw = None
        rows += segment_measures([tuple(s) for s in entry["phonemes"]], verts, template, fps, sub_mid,
                                 sub_loop, jaw)
    return rows


def _in_group(row: dict, spec: dict) -> bool:
    if row["phoneme"] not in spec["phonemes"] or row["dur"] < spec.get("min_dur", 0.0):
        return False
    nb = spec.get("next_to_bilabial")
    return nb is None or row["next_to_bilabial"] == nb


def phoneme_table(rows: list[dict], targets: dict | None = None) -> dict[str, dict]:
    """Group name -> {count, median gap, gap_rel, jaw, rounding, spread, closed share}."""
    targets = targets or load_targets()
    table = {}
    for name, spec in targets["groups"].items():
        sel = [r for r in rows if _in_group(r, spec)]
        if not sel:
            table[name] = {"count": 0}
            continue
        col = {k: np.array([r[k] for r in sel]) for k in ("gap", "gap_rel", "jaw", "rounding", "spread", "min_gap_rel")}
        table[name] = {"count": len(sel), **{k: float(np.median(v)) for k, v in col.items() if k != "min_gap_rel"},
                       "closed": float(np.mean(col["min_gap_rel"] < targets["closed_below"]))}
    return table


def check(table: dict[str, dict], targets: dict | None = None) -> list[str]:
    """The targets a table misses, one readable line each (empty: all met).

    A target is ``[group, figure, op, value]`` with op ``>=`` or ``<=``; the value is a
    number, or ``[factor, group2]`` for a factor of another group's figure. Groups with
    fewer than the targets' ``min_count`` segments are not judged.
    """
    targets = targets or load_targets()
    least = int(targets.get("min_count", 1))  # a median of a handful of segments judges nothing
    misses = []
    for group, figure, op, value in targets["targets"]:
        row = table.get(group, {})
        if row.get("count", 0) < least:
            continue  # a small corpus may lack a group, or hold too few of it; nothing to check
        have = row[figure]
        if isinstance(value, list):
            factor, other = value
            if table.get(other, {}).get("count", 0) < least:
                continue
            limit, what = factor * table[other][figure], f"{factor} x {other} ({table[other][figure]:.3f})"
        else:
            limit, what = float(value), f"{value}"
        ok = have >= limit if op == ">=" else have <= limit
        if not ok or not np.isfinite(have):
            misses.append(f"{group}: {figure} {have:.3f}, wanted {op} {what}")
    return misses


def format_table(table: dict[str, dict]) -> str:
    """The table as aligned text (one row per group)."""
    lines = [f"{'group':<30}{'n':>6}{'gap mm':>8}{'gap/p95':>8}{'jaw':>6}{'round':>7}{'spread':>7}{'closed':>7}"]
    for name, r in table.items():
        if not r.get("count"):
            lines.append(f"{name:<30}{0:>6}")
            continue
        lines.append(f"{name:<30}{r['count']:>6}{r['gap']:>8.2f}{r['gap_rel']:>8.2f}{r['jaw']:>6.2f}"
                     f"{r['rounding']:>7.3f}{r['spread']:>7.3f}{r['closed']:>7.2f}")
    return "\n".join(lines)
