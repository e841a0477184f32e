"""avtalk: speech-driven 3D face animation with lip-reading guidance.

Shape glossary used in every docstring of the package:
    B batch, T frames, V vertices, F faces, K blendshapes, H x W image, C channels,
    S audio samples, L tokens.
"""

__version__ = "0.1.0"
