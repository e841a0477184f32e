"""Pydantic configs of ``avtalk train`` and ``avtalk animate``.

A config file (JSON, or YAML when PyYAML is installed) gives the base values; command
line flags that were given override them. Unknown keys are refused, so a typo in a
config file is an error rather than a silently ignored setting.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from talkinghead_cli.data.augment import AugmentConfig
from talkinghead_cli.errors import UserError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class TrainConfig(_Strict):
    """Everything ``avtalk train`` needs; stored in every checkpoint it writes."""

    dataset: Literal["vocaset", "biwi", "synthetic"]
    data_root: Path
    run_dir: Optional[Path] = None  # default runs/<dataset>-<animator>
    epochs: int = Field(100, ge=1)
    animator: Literal["faceformer", "codetalker"] = "faceformer"
    size: Literal["tiny", "vocaset", "biwi"] = "tiny"
    stage: Literal[1, 2] = 2
    encoder: str = "mel"
    animator_options: dict[str, Any] = Field(default_factory=dict)
    init_from: Optional[Path] = None  # e.g. the CodeTalker stage-1 run's best.pt for stage 2
    lr: float = Field(1e-4, gt=0)
    # "cosine": lr * (1 + cos(pi * step / steps)) / 2 over the run's optimizer steps (a function of
    # the step alone, so a resumed run continues the same curve); "constant": lr throughout
    lr_schedule: Literal["constant", "cosine"] = "constant"
    batch_size: int = Field(1, ge=1)  # sequences per optimizer step (gradients accumulated)
    grad_clip: Optional[float] = Field(1.0, gt=0)
    lip_weight: float = Field(1.0, ge=0)  # lambda_rlv: MSE over lip vertices, when known
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # mixed precision, on CUDA only
    keep_60fps: bool = False
    faces_from: Optional[Path] = None
    resume: bool = False
    # audio-visual lip-reading loss (stage 2): L = lambda_mse*L_mse + lambda_av*L_av + lip_weight*L_rlv
    av_loss: bool = False
    expert: Optional[Path] = None  # expert checkpoint (avtalk finetune-expert), needed by av_loss
    lambda_mse: float = Field(1.0, ge=0)  # weight of the animator's own loss (vertex MSE)
    # With summed CTC/CE (as the reference, which used 1e-7 on VOCASET's metre scale). Chosen on
    # the synthetic val split with the bundled trained tiny expert (models/avtalk-tiny.md: 3e-9,
    # 1e-8 and 3e-8 tried, 2 epochs from a trained animator with --lr-schedule cosine): 1e-8
    # lowered CER most and kept val LVE below the MSE twin's; there the gradient of L_av on the
    # lip vertices is about 4 x that of L_mse + L_rlv at a trained animator
    # (benchmarks/bench_av_step.py --expert E.pt --init-from A.pt measures the ratio; it depends
    # on the mesh scale and the expert: a random expert's gradients are ~1e4 x weaker).
    lambda_av: float = Field(1e-8, ge=0)
    av_ctc_weight: float = Field(0.1, ge=0, le=1)  # lambda_ctc; lambda_ce = 1 - lambda_ctc
    av_label_smoothing: float = Field(0.1, ge=0, lt=1)
    av_reduction: Literal["sum", "mean"] = "sum"
    expert_mode: Literal["frozen", "joint"] = "frozen"
    expert_lr: Optional[float] = Field(None, gt=0)  # joint mode; default lr / 10
    av_mode: Literal["video", "av"] = "video"  # the expert reads lips only, or lips and speech
    # L_av's gradient on the vertices diffused over the mesh by this many steps of
    # (I - L/2)^T (training.losses.smooth_gradient): the lip reader then pulls no lip vertex
    # out of the surface around it (0: off)
    av_smooth: int = Field(0, ge=0, le=1000)
    # mouth-opening curve MSE (training.losses.lip_gap_loss) and frame-to-frame motion MSE
    lambda_gap: float = Field(0.0, ge=0)
    lambda_vel: float = Field(0.0, ge=0)
    # weight of the frames where the target's lips are shut, inside the mouth-opening term
    gap_closed_weight: float = Field(1.0, ge=1)
    gap_closed_below: float = Field(0.25, gt=0, le=1)
    gap_range_weight: float = Field(0.0, ge=0)
    # MSE of the mesh Laplacians (training.losses.laplacian_loss): keeps creases out
    lambda_lap: float = Field(0.0, ge=0)
    # audio augmentation of the training split (data.augment): effect probabilities, or None
    augment: Optional[AugmentConfig] = None

    @model_validator(mode="after")
    def _default_run_dir(self) -> "TrainConfig":
        if self.run_dir is None:
            self.run_dir = Path("runs") / f"{self.dataset}-{self.animator}"
        return self

    @model_validator(mode="after")
    def _check_av(self) -> "TrainConfig":
        if self.av_loss and self.expert is None:
            raise ValueError("--av-loss needs --expert (a checkpoint from avtalk finetune-expert)")
        if self.av_smooth and not self.av_loss:
            raise ValueError("--av-smooth acts on the lip-reading loss: add --av-loss --expert E.pt, or drop it")
        if (self.lambda_mse == 0 and self.lip_weight == 0 and self.lambda_gap == 0 and self.lambda_vel == 0
                and self.lambda_lap == 0
                and (not self.av_loss or self.lambda_av == 0)):
            raise ValueError("all loss weights are 0 (--lambda-mse, --lambda-rlv, --lambda-gap, --lambda-vel, --lambda-lap"
                             + (", --lambda-av" if self.av_loss else ", and no --av-loss")
                             + "): nothing to train; give one of them a positive weight")
        return self


class AnimateConfig(_Strict):
    """Everything ``avtalk animate`` needs."""

    audio: list[Path]  # speech files, folders and globs (several: each animated into out/<stem>/)
    out: Path
    checkpoint: Optional[Path | str] = None  # path or registered name; default: the bundled default animator
    template: Optional[Path] = None  # default: the checkpoint's training template
    style: Optional[str] = None  # SUBJECT or A:0.5,B:0.5; default: the mean of all styles
    format: str = "obj"  # comma list of obj, ply, npy, npz, gltf, arkit (normalised: "obj,gltf")
    landmarks: Optional[Path] = None  # user/template vertex pairs for retargeting's first alignment
    video: bool = True
    device: str = "auto"
    window_seconds: float = Field(60.0, gt=0)  # longer audio is animated in windows
    overlap_seconds: float = Field(2.0, ge=0)  # cross-faded between windows
    allow_long: bool = False

    @field_validator("audio", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, (str, Path)) else value

    @model_validator(mode="after")
    def _check_overlap(self) -> "AnimateConfig":
        if self.overlap_seconds * 2 > self.window_seconds:
            raise ValueError("overlap_seconds must be at most half of window_seconds")
        return self

    @field_validator("format")
    @classmethod
    def _check_format(cls, value: str) -> str:
        from talkinghead_cli.export import parse_formats

        return ",".join(parse_formats(value))

    @property
    def formats(self) -> list[str]:
        """The output formats, e.g. ``["obj", "gltf"]``."""
        return self.format.split(",")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML config file into a dict.

    Raises:
        UserError: missing file, bad syntax, a non-mapping document, or YAML without PyYAML.
    """
    from talkinghead_cli.paths import check_input

    path = check_input(path, "--config")
    if not path.exists():
        raise UserError("config file not found", path, "check the path")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"the config file is not UTF-8 text (byte 0x{e.object[e.start]:02x} at {e.start})", path,
                        "save it as UTF-8 JSON or YAML") from e
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as e:
            raise UserError("reading YAML needs PyYAML", path, "pip install pyyaml, or use JSON") from e
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise UserError(f"invalid YAML ({e})".replace("\n", " "), path, "fix the syntax") from e
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"invalid JSON ({e.msg} at line {e.lineno})", path, "fix the syntax") from e
    else:
        raise UserError(f"unsupported config format '{suffix}'", path, "use .json, .yaml or .yml")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError("the config file must hold a mapping of option: value", path, "fix the file")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def build_config(cls: type[BaseModel], file_values: dict[str, Any], flags: dict[str, Any],
                 source: str | Path | None = None, command: str | None = None) -> Any:
    """Merge ``flags`` (those not None) over ``file_values`` and validate as ``cls``.

    Raises:
        UserError: one line naming the first invalid or unknown option.
    """
    merged = dict(file_values)
    merged.update({k: v for k, v in flags.items() if v is not None})
    try:
        cfg = cls(**merged)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "config"
        msg = "unknown option" if err["type"] == "extra_forbidden" else err["msg"]
        hint = f"see `avtalk {command} --help`" if command else "see `avtalk COMMAND --help`"
        if not err["loc"] and err["type"] == "value_error":  # a check across options: its own sentence
            raise UserError(msg.removeprefix("Value error, "), source, hint) from e
        raise UserError(f"invalid setting '{where}': {msg}", source, hint) from e
    from talkinghead_cli.paths import check_config_paths

    check_config_paths(cfg, command)  # no FIFO, device or misplaced folder among the inputs
    return cfg


class ExpertTrainConfig(_Strict):
    """Everything ``avtalk finetune-expert`` needs (stage 1: the lip-reading expert on
    renders of ground-truth meshes); stored in every checkpoint it writes."""

    dataset: Literal["vocaset", "biwi", "synthetic"]
    data_root: Path
    run_dir: Optional[Path] = None  # default runs/<dataset>-expert
    epochs: int = Field(30, ge=1)
    expert_checkpoint: Optional[Path] = None  # our expert .pt or a published Auto-AVSR .pth/.ckpt
    size: Optional[Literal["tiny", "base"]] = None  # default: the checkpoint's, else tiny
    modalities: Optional[Literal["av", "video"]] = None  # default: the checkpoint's, else av
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.03, ge=0)
    warmup_steps: int = Field(50, ge=0)  # linear warm-up, then cosine decay to 0
    batch_size: int = Field(4, ge=1)  # utterances per padded batch
    grad_clip: Optional[float] = Field(5.0, gt=0)
    ctc_weight: float = Field(0.1, ge=0, le=1)  # lambda_ctc; lambda_ce = 1 - lambda_ctc
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    loss_reduction: Literal["sum", "mean"] = "mean"
    p_drop_audio: float = Field(0.5, ge=0, le=1)  # modality dropout (av only): lips alone
    p_drop_video: float = Field(0.0, ge=0, le=1)  # modality dropout (av only): speech alone
    window_size: int = Field(88, ge=16)  # lip window side in pixels
    margin: float = Field(0.3, ge=0)
    sigma: float = Field(0.5, gt=0)  # soft-edge width of the renderer, pixels
    cache: bool = True
    cache_dir: Optional[Path] = None  # default RUN_DIR/cache
    max_val: Optional[int] = Field(None, ge=1)  # validate on the first N val utterances only
    seed: int = 0
    device: str = "auto"
    faces_from: Optional[Path] = None
    resume: bool = False

    @model_validator(mode="after")
    def _defaults(self) -> "ExpertTrainConfig":
        if self.run_dir is None:
            self.run_dir = Path("runs") / f"{self.dataset}-expert"
        if self.p_drop_audio + self.p_drop_video > 1:
            raise ValueError("p_drop_audio + p_drop_video must be at most 1")
        return self


class ScoreConfig(_Strict):
    """Everything ``avtalk score`` needs: one animation (``path``) or a dataset split."""

    path: Optional[Path] = None  # an `avtalk animate` folder or a .npy/.npz vertex file
    transcript: Optional[str] = None
    audio: Optional[Path] = None  # speech: also read audio-visually
    reference: Optional[Path] = None  # ground-truth (T, V, 3) for LVE/FDD/MVE
    reference_fps: Optional[float] = Field(None, gt=0)  # default: stored in its .npz, else from its length
    expert: Optional[str] = None  # expert checkpoint path or registered name
    template: Optional[Path] = None  # mesh with faces, for a bare vertex file
    lip_indices: Optional[Path] = None
    checkpoints: list[str] = Field(default_factory=list)  # animators (path or registered name)
    fps: Optional[float] = Field(None, gt=0)
    dataset: Optional[Literal["vocaset", "biwi", "synthetic"]] = None
    data_root: Optional[Path] = None
    split: Literal["train", "val", "test", "test_b"] = "test"
    transcripts: Optional[Path] = None  # JSON {utterance id: text}; the synthetic corpus has its own
    beam: Optional[int] = Field(None, ge=1)  # None: greedy CTC
    json_path: Optional[Path] = None
    device: str = "auto"
