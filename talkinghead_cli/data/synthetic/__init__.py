"""The synthetic talking-face corpus (``avtalk synth``).

Modules, in pipeline order: :mod:`.sentences` (text), :mod:`.tts` (speech with phoneme
timing; :mod:`.align` for real recordings), :mod:`.phonemes` (IPA -> ARPAbet),
:mod:`.articulation` (phonemes -> ARKit weights, table in ``visemes.json``), :mod:`.rig`
and :mod:`.regions` (the blendshape face), :mod:`.corpus` (the writer).
"""
