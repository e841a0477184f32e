"""Rig loading, phoneme conversion, articulation rules and sentences (no TTS needed)."""

import json
import struct

import numpy as np
import pytest

pytest.importorskip("meshopt")
pytest.importorskip("openfacefx")

from talkinghead_cli.data.synthetic.articulation import Style, articulate, load_mapping  # noqa: E402
from talkinghead_cli.data.synthetic.phonemes import ARPABET, timed_ipa_to_segments  # noqa: E402
from talkinghead_cli.data.synthetic.regions import boundary_loops, lip_gap, lip_midline  # noqa: E402
from talkinghead_cli.data.synthetic.rig import canonical_arkit_name, load_rig  # noqa: E402
from talkinghead_cli.errors import UserError  # noqa: E402


@pytest.fixture(scope="module")
def rig():
    return load_rig()


def test_default_rig_is_facecap_with_52_arkit_targets(rig):
    assert len(rig.names) == 52 and "jawOpen" in rig.names and "mouthSmileLeft" in rig.names
    v = rig.num_verts
    assert rig.basis.shape == (52, v, 3) and rig.template.shape == (v, 3)
    assert rig.faces.min() >= 0 and rig.faces.max() < v
    assert 0.2 < np.ptp(rig.template[rig.head, 1]) < 0.26  # scaled to metres
    lips, upper = set(rig.lip_indices.tolist()), set(rig.upper_face_indices.tolist())
    assert len(lips) > 50 and len(upper) > 100 and not lips & upper
    assert rig.template[rig.lip_indices, 1].mean() < rig.template[rig.upper_face_indices, 1].mean()
    again = load_rig()
    assert np.array_equal(again.lip_indices, rig.lip_indices)
    assert np.array_equal(again.upper_face_indices, rig.upper_face_indices)


def test_pose_matches_reference_loop(rig):
    w = np.random.default_rng(0).uniform(0, 1, size=(3, len(rig.names))).astype(np.float32)
    np.testing.assert_allclose(rig.pose(w), rig.pose_reference(w), atol=1e-5)


def test_jaw_moves_lower_teeth_but_not_upper(rig):
    j = rig.index("jawOpen")
    rigid = np.flatnonzero(~rig.head)
    moved = np.linalg.norm(rig.basis[j, rigid], axis=1) > 1e-4
    assert 0 < moved.sum() < len(rigid)


def test_arkit_name_spellings():
    assert canonical_arkit_name("mouthSmile_L") == "mouthSmileLeft"
    assert canonical_arkit_name("blendShape1.jawOpen") == "jawOpen"
    assert canonical_arkit_name("EyeBlinkRight") == "eyeBlinkRight"
    assert canonical_arkit_name("smile") is None


def _write_glb(path, targets: dict):
    """A plain (uncompressed) GLB: a 4x4 vertex grid with a slit row, given morph targets."""
    xs, ys = np.meshgrid(np.linspace(-1, 1, 4), np.linspace(-1, 1, 4))
    pos = np.stack([xs.ravel(), ys.ravel(), np.zeros(16)], 1).astype(np.float32)
    quads = [(r * 4 + c, r * 4 + c + 1, r * 4 + c + 5, r * 4 + c + 4) for r in range(3) for c in range(3) if r != 1]
    idx = np.array([[a, b, c] for a, b, c, d in quads] + [[a, c, d] for a, b, c, d in quads], np.uint32)
    blobs = [pos.tobytes(), idx.tobytes()] + [np.asarray(o, np.float32).tobytes() for o in targets.values()]
    views, offset = [], 0
    for b in blobs:
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(b)})
        offset += len(b)
    accessors = [{"bufferView": 0, "componentType": 5126, "count": 16, "type": "VEC3",
                  "min": pos.min(0).tolist(), "max": pos.max(0).tolist()},
                 {"bufferView": 1, "componentType": 5125, "count": idx.size, "type": "SCALAR"}]
    accessors += [{"bufferView": 2 + i, "componentType": 5126, "count": 16, "type": "VEC3"} for i in range(len(targets))]
    gltf = {"asset": {"version": "2.0"}, "buffers": [{"byteLength": offset}], "bufferViews": views,
            "accessors": accessors, "nodes": [{"mesh": 0, "scale": [0.1, 0.1, 0.1]}], "scenes": [{"nodes": [0]}],
            "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1,
                                        "targets": [{"POSITION": 2 + i} for i in range(len(targets))]}],
                        "extras": {"targetNames": list(targets)}}]}
    js = json.dumps(gltf).encode()
    js += b" " * (-len(js) % 4)
    binary = b"".join(blobs)
    binary += b"\0" * (-len(binary) % 4)
    data = struct.pack("<4sII", b"glTF", 2, 12 + 8 + len(js) + 8 + len(binary))
    data += struct.pack("<I4s", len(js), b"JSON") + js + struct.pack("<I4s", len(binary), b"BIN\0") + binary
    path.write_bytes(data)


def test_uncompressed_user_glb_with_arkit_names(tmp_path):
    rng = np.random.default_rng(1)
    names = ["jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthSmile_L", "eyeBlink_R"]
    path = tmp_path / "avatar.glb"
    _write_glb(path, {n: rng.normal(0, 0.05, (16, 3)) for n in names})
    rig = load_rig(path)
    assert rig.num_verts == 16 and len(rig.faces) == 12
    assert set(rig.names) == {"jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthSmileLeft", "eyeBlinkRight"}
    assert len(rig.lip_indices) > 0


def test_gltf_with_embedded_data_uri(tmp_path):
    import base64

    rng = np.random.default_rng(2)
    glb = tmp_path / "a.glb"
    _write_glb(glb, {n: rng.normal(0, 0.05, (16, 3)) for n in ["jawOpen", "mouthClose", "mouthFunnel", "mouthPucker"]})
    data = glb.read_bytes()
    json_len = struct.unpack_from("<I", data, 12)[0]
    gltf = json.loads(data[20:20 + json_len])
    bin_len = struct.unpack_from("<I", data, 20 + json_len)[0]
    binary = data[28 + json_len: 28 + json_len + bin_len]
    gltf["buffers"][0]["uri"] = "data:application/octet-stream;base64," + base64.b64encode(binary).decode()
    (tmp_path / "a.gltf").write_text(json.dumps(gltf))
    a, b = load_rig(glb), load_rig(tmp_path / "a.gltf")
    assert np.array_equal(a.template, b.template) and np.array_equal(a.basis, b.basis)


def test_rig_without_arkit_mouth_targets_is_user_error(tmp_path):
    path = tmp_path / "plain.glb"
    _write_glb(path, {"smile": np.zeros((16, 3)), "frown": np.zeros((16, 3))})
    with pytest.raises(UserError, match="ARKit"):
        load_rig(path)
    bad = tmp_path / "bad.glb"
    bad.write_bytes(b"not a glb at all")
    with pytest.raises(UserError, match="cannot read the rig"):
        load_rig(bad)


def test_boundary_loops_of_a_slit():
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    loops = boundary_loops(faces)
    assert len(loops) == 1 and sorted(loops[0].tolist()) == [0, 1, 2, 3]


def test_piper_style_ipa_tokens_become_arpabet():
    toks = [("^", 0.05), ("b", 0.04), ("ˈ", 0.02), ("u", 0.05), ("ː", 0.03), ("t", 0.05), (" ", 0.04),
            ("m", 0.05), ("a", 0.06), ("ɪ", 0.04), (".", 0.1), ("$", 0.02)]
    segs = timed_ipa_to_segments(toks)
    assert [s for _, _, s in segs] == ["SIL", "B", "UW", "T", "M", "AY", "SIL"]
    assert segs[0][0] == 0 and abs(segs[-1][1] - sum(d for _, d in toks)) < 1e-9
    assert all(abs(a[1] - b[0]) < 1e-9 for a, b in zip(segs, segs[1:]))  # contiguous
    uw = segs[2]
    assert abs((uw[1] - uw[0]) - 0.10) < 1e-9  # stress mark + length mark join the vowel


def _weights(rig, phones, dur=0.12):
    segs, t = [(0.0, 0.3, "SIL")], 0.3
    for p in phones:
        segs.append((t, t + dur, p))
        t += dur
    segs.append((t, t + 0.3, "SIL"))
    frames = int(round((t + 0.3) * 30))
    return segs, articulate(segs, frames, 30, rig.names, Style(blink_rate=0.0))


def test_articulation_rules_on_the_rig(rig):
    up, lo = lip_midline(rig)
    segs, w = _weights(rig, ["AA", "B", "AA", "M", "AE", "P", "AO", "F", "IY", "W", "UW", "S"])
    gap = lip_gap(rig.pose(w), up, lo)
    at = {s: [w[int(round(0.5 * (a + b) * 30))] for a, b, p in segs if p == s] for s in {p for _, _, p in segs}}
    centre = {s: [gap[int(round(0.5 * (a + b) * 30))] for a, b, p in segs if p == s] for s in ("B", "M", "P")}
    for s, gs in centre.items():
        assert max(gs) <= 0.1 * gap.max(), s
    jaw, fun, puc = rig.index("jawOpen"), rig.index("mouthFunnel"), rig.index("mouthPucker")
    assert min(v[jaw] for s in ("AA", "AO") for v in at[s]) > max(v[jaw] for s in ("IY", "UW") for v in at[s])
    rounding = lambda s: np.mean([v[fun] + v[puc] for v in at[s]])  # noqa: E731
    assert rounding("UW") > rounding("IY") and rounding("W") > rounding("IY")
    assert w[0].max() < 0.05 and w[-1].max() < 0.05  # relaxed rest in silences
    roll = rig.index("mouthRollLower")
    assert at["F"][0][roll] > 0.3


def test_anticipatory_rounding_starts_before_the_vowel(rig):
    segs, w = _weights(rig, ["S", "T", "UW"], dur=0.1)
    puc = rig.index("mouthPucker")
    t_uw = int(round(segs[3][0] * 30))  # onset of UW
    forward = _weights(rig, ["UW", "T", "S"], dur=0.1)[1]
    t_end = int(round(segs[1][1] * 30))  # end of UW in the mirrored order
    assert w[t_uw - 2, puc] > forward[t_end + 2, puc]


def test_mapping_covers_every_phoneme():
    m = load_mapping()
    assert set(ARPABET) <= set(m["phonemes"])
    for p in m["phonemes"].values():
        assert all(v in m["visemes"] for v in p["visemes"]) and p["class"] in m["classes"]


def test_builtin_sentences_are_many_distinct_and_balanced():
    from talkinghead_cli.data.synthetic.corpus import sentence_pools
    from talkinghead_cli.data.synthetic.sentences import load_cmudict, load_sentences, phonemise

    sents = load_sentences()
    assert len(sents) >= 1500 and len(set(sents)) == len(sents)
    cmu = load_cmudict()
    pools = sentence_pools(sents, seed=0)
    assert not set(pools["train"]) & (set(pools["val"]) | set(pools["test"]))
    for split, texts in pools.items():
        phones = {p for t in texts for p in phonemise(t, cmu)}
        assert set(ARPABET) <= phones, split


def test_builtin_sentences_union_both_sources_and_say_where_they_come_from():
    from talkinghead_cli.data.synthetic.sentences import BUILTIN_FILES, load_sentences

    sources = (BUILTIN_FILES[0].parent / "SOURCES.md").read_text()
    counts = [len(load_sentences(f)) for f in BUILTIN_FILES]
    assert counts[1] >= 1500 and len(load_sentences()) == sum(counts)  # no sentence in both
    assert all(f.name in sources for f in BUILTIN_FILES) and "WordNet 3.0 Copyright 2006" in sources


def test_wordnet_examples_are_filtered_sentences(tmp_path):
    from talkinghead_cli.data.synthetic.sentences import wordnet_examples

    head = "  1 This software and database is being provided to you\n"
    for pos in ("noun", "verb", "adj", "adv"):
        (tmp_path / f"data.{pos}").write_text(head)
    (tmp_path / "data.verb").write_text(
        head + '00001 29 v 01 run 0 | move fast; "she ran to the old shop on the corner"; "ran home"\n'
        '00002 29 v 01 go 0 | proceed; "She ran to the old shop on the corner."; "he paid $5 for the shop on the hill"\n'
        '00003 29 v 01 x 0 | x; "what the hell did you do with the car"\n')
    assert wordnet_examples(tmp_path) == ["She ran to the old shop on the corner."]


@pytest.mark.parametrize("vowel", ["AA", "AE", "AO"])
def test_vowel_between_bilabials_still_opens(rig, vowel):
    """'Bob', 'map', 'palm': the lips close at the consonants, the jaw and lips open for the vowel."""
    up, lo = lip_midline(rig)
    rest = lip_gap(rig.template[None], up, lo)[0]
    peaks = {}
    for cons in ("B", "T"):
        segs, w = _weights(rig, [cons, vowel, cons], dur=0.09)
        gap = lip_gap(rig.pose(w), up, lo) - rest
        a, b = segs[2][0], segs[2][1]  # the vowel (segs[0] is the leading silence)
        frames = slice(int(np.ceil(a * 30)), int(np.ceil(b * 30)))
        peaks[cons] = (gap[frames].max(), w[frames, rig.index("jawOpen")].max())
        if cons == "B":
            for s in (segs[1], segs[3]):  # each /b/ shuts the lips on a frame it covers
                near = slice(int(np.floor(s[0] * 30)), int(np.ceil(s[1] * 30)) + 1)
                assert gap[near].min() <= 0.1 * gap.max(), (vowel, s)
    assert peaks["B"][0] >= 0.75 * peaks["T"][0], peaks  # lip gap
    assert peaks["B"][1] >= 0.8 * peaks["T"][1], peaks  # jaw


def test_phoneme_check_flags_a_closed_vowel_next_to_bilabials():
    from talkinghead_cli.data.synthetic import phoneme_check as pc

    def row(ph, gap, nb, jaw=0.3, rounding=0.2, spread=0.0, min_rel=0.5):
        return {"phoneme": ph, "dur": 0.1, "gap": gap, "gap_rel": gap / 6.0, "min_gap_rel": min_rel, "jaw": jaw,
                "rounding": rounding, "spread": spread, "next_to_bilabial": nb}

    n = pc.load_targets()["min_count"]
    good = [row("AA", 5.0, False), row("AA", 5.5, False), row("AE", 4.5, True), row("B", 0.0, False, min_rel=0.0)]
    assert pc.check(pc.phoneme_table(good * n)) == []
    bad = good[:2] + [row("AE", 1.3, True)] + [row("B", 2.0, False, min_rel=0.4)]
    assert pc.check(pc.phoneme_table(bad * (n - 1))) == []  # too few segments to judge
    bad = bad * n
    misses = pc.check(pc.phoneme_table(bad))
    assert any(m.startswith("open vowel next to P B M: gap") for m in misses), misses
    assert any(m.startswith("bilabial P B M: closed") for m in misses), misses
    assert "open vowel" in pc.format_table(pc.phoneme_table(bad))
