"""avtalk: speech-driven 3D face animation with lip-reading guidance.

Shape glossary used in every docstring of the package:
    B batch, T frames, V vertices, F faces, K blendshapes, H x W image, C channels,
    S audio samples, L tokens.

Layers, bottom up; a module imports only from its own layer or below (kept by
``tests/test_layers.py``, which also forbids import cycles):

    1. errors, progress, atomic, device, jit          the foundation
    2. audio, mesh, checkpoint, metrics, text_metrics, style, pretrained
    3. render/, data/, phonemize, articulation_metrics  rendering, corpora
    4. export, retarget, video                        outputs
    5. animator/, lipreader/                          the models
    6. config                                         the commands' settings
    7. training/                                      both trainers (animator, expert)
    8. animate, score                                 the library behind the commands
    9. cli, __main__                                  the Typer shell
"""

import os as _os

__version__ = "0.1.0"

# The compiled CPU kernels (numba, ``render/*_jit.py``) run on threads of their own between
# PyTorch operations. PyTorch's CPU build uses GNU OpenMP, whose idle workers spin for 300,000
# iterations after every parallel operation (milliseconds on some CPUs) before they sleep; on a
# small machine they then take cores from the kernels that follow. A shorter spin (measured on
# 2 cores: the lip-window render 46 -> 29 ms, PyTorch-only steps unchanged) only takes effect
# when set before torch is first imported, and an explicit setting of the user's wins.
if "GOMP_SPINCOUNT" not in _os.environ and "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ["GOMP_SPINCOUNT"] = "10000"
