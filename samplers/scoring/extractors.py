"""Feature extractors for scoring, as torch-fidelity feature extractors.

Two kinds:

- `inception`: torch-fidelity's `inception-v3-compat` (the TF-ported Inception
  the papers use). Its weights are downloaded on first use by torch.hub from
  torch-fidelity's URL; offline, pass `--inception-weights PATH` (a copy of
  weights-inception-2015-12-05-6726825d.pth). Either file is read with
  `torch.load(weights_only=True)` and checked here; torch-fidelity then gets
  the checked tensors re-serialised in memory (`inception_weights_buffer`), so
  it never unpickles a file robustgen did not write.
- any classifier `robustgen.kernel.models.sources.load_classifier` reads (a robustgen
  checkpoint, robustbench:, robustness:, torchvision:, timm:, python:,
  torchscript:, export:; a `ModelSpec` carries --mean/--std and friends): logits
  for IS, penultimate features for FID/KID/PRC. Registered in torch-fidelity's
  feature-extractor registry under a name derived from the weights' sha256 (and,
  for networks normalised by the caller, the spec and normalisation), so cache
  keys never mix two models. Numbers from it are not comparable with Inception
  numbers in papers.

`samplers.scoring.features` builds the network from the registry and runs it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.io import settings_hash

INCEPTION = "inception"
INCEPTION_FIDELITY_NAME = "inception-v3-compat"
INCEPTION_FEATURE_DIM = 2048
CLASSIFIER_FEATURES = "features"  # penultimate activations: FID, KID, PRC
CLASSIFIER_LOGITS = "logits"  # IS
NOT_COMPARABLE = "not comparable with Inception-based numbers in papers"


@dataclass(frozen=True)
class Extractor:
    """Everything scoring needs to know about a feature extractor."""

    name: str  # torch-fidelity registry name (also its cache key)
    kind: str  # "inception" or "classifier"
    description: str  # for tables and score.json
    comparable_with_papers: bool
    feature_dim: int  # dimension of the FID/KID/PRC features
    input_shape: tuple[int, int, int] | None  # (C, H, W) the extractor needs; None = any (Inception resizes)
    channels: int  # channels fed to the extractor (3 for Inception: grayscale is repeated)
    weights_path: str | None  # local Inception weights given by the user (None: torch.hub's download)
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    dataset: str | None = None  # the dataset the classifier was trained on
    classes: tuple[str, ...] | None = None
    option: str = "--features"  # the flag the user named this extractor with (eval's --judge serves as one too)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "comparable_with_papers": self.comparable_with_papers,
            "feature_dim": self.feature_dim,
            "checkpoint": self.checkpoint,
            "checkpoint_sha256": self.checkpoint_sha256,
            "weights_path": self.weights_path,
        }


def resolve_extractor(
    features: str | os.PathLike,
    *,
    inception_weights: str | os.PathLike | None = None,
    data: str | None = None,
    data_root: str | os.PathLike | None = None,
    input_shape: tuple[int, int, int] | None = None,
) -> Extractor:
    """`"inception"` or any classifier spec (str or ModelSpec) -> a registered, ready-to-use Extractor.

    data/data_root/input_shape: what a python:/torchscript:/export: network is used on (the reference
    dataset, or the samples' image shape), which gives its classes and input size.
    """
    if str(features) == INCEPTION:
        return inception_extractor(inception_weights)
    return classifier_extractor(features, data=data, data_root=data_root, input_shape=input_shape)


# --------------------------------------------------------------------------- Inception-v3 (torch-fidelity)


def inception_extractor(weights_path: str | os.PathLike | None = None) -> Extractor:
    """torch-fidelity's inception-v3-compat; makes sure its weights can be had, or says how."""
    if weights_path is not None:
        weights_path = _check_inception_weights(Path(weights_path).expanduser())
    else:
        ensure_inception_download()
    return Extractor(
        name=INCEPTION_FIDELITY_NAME,
        kind="inception",
        description="Inception-v3 (torch-fidelity inception-v3-compat, TF weights 2015-12-05): comparable with papers",
        comparable_with_papers=True,
        feature_dim=INCEPTION_FEATURE_DIM,
        input_shape=None,
        channels=3,
        weights_path=weights_path,
    )


def inception_cache_path() -> Path:
    """Where torch.hub (and so torch-fidelity) keeps the downloaded weights."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(URL_INCEPTION_V3)


def ensure_inception_download() -> None:
    """Run torch-fidelity's download (torch.hub.load_state_dict_from_url on its URL) unless cached.

    The download is the one torch-fidelity's FeatureExtractorInceptionV3 does;
    doing it here first turns an offline failure into one clear line.
    """
    if inception_cache_path().is_file():
        return
    from torch.hub import load_state_dict_from_url
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    import contextlib
    import io
    import sys

    interactive = sys.stderr.isatty()
    if interactive:
        print(f"downloading the Inception-v3 weights (~100 MB, once) from {URL_INCEPTION_V3}", file=sys.stderr)
    try:
        # torch.hub announces the download on stdout (which would corrupt --json); offline it would only precede our error
        with contextlib.redirect_stdout(sys.stderr if interactive else io.StringIO()):
            load_state_dict_from_url(URL_INCEPTION_V3, progress=interactive, weights_only=True)
    except Exception as exc:  # URLError, socket/ssl errors, hash mismatch: all mean "no weights"
        reason = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else type(exc).__name__
        raise RobustgenError(
            f"cannot download the Inception-v3 weights ({reason}): fetch {URL_INCEPTION_V3} on a machine with internet "
            "and pass --inception-weights PATH, or use a classifier with --features SPEC (a robustgen checkpoint or e.g. python:FILE.py:FACTORY=WEIGHTS)"
        ) from None


def _check_inception_weights(path: Path) -> str:
    if not path.is_file():
        raise RobustgenError(
            f"--inception-weights {path}: file not found: download weights-inception-2015-12-05-6726825d.pth (torch-fidelity's) and give its path"
        )
    inception_state_dict(path)
    return str(path)


def inception_state_dict(path: str | os.PathLike) -> dict:
    """The Inception weights at `path`, read without unpickling code (weights_only=True) and checked."""
    from robustgen.kernel.models.foreign import quiet_torch_load

    path = Path(path)
    try:
        state = quiet_torch_load(path, weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:80] if str(exc).strip() else type(exc).__name__
        if reason.startswith("Weights only load failed"):
            reason = "it holds pickled code, which is never loaded"
        raise RobustgenError(f"--inception-weights {path}: cannot read it ({reason}): give torch-fidelity's weights-inception-2015-12-05-6726825d.pth") from None
    fc = state.get("fc.weight") if isinstance(state, dict) else None
    if fc is None or tuple(fc.shape) != (1008, INCEPTION_FEATURE_DIM):
        raise RobustgenError(
            f"--inception-weights {path}: not torch-fidelity's Inception-v3 weights (no 1008x2048 fc.weight): give weights-inception-2015-12-05-6726825d.pth"
        )
    return state


def inception_weights_buffer(extractor: Extractor):
    """The extractor's Inception weights as an in-memory file for torch-fidelity's constructor.

    torch-fidelity reads `feature_extractor_weights_path` with
    torch.load(weights_only=False); handing it bytes we serialised ourselves from
    a weights_only=True load keeps untrusted pickles from ever being unpickled.
    """
    import io

    state = inception_state_dict(extractor.weights_path or inception_cache_path())
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


# --------------------------------------------------------------------------- robustgen classifier


_REGISTERED: dict[str, Extractor] = {}  # extractor name -> Extractor (one registration per process)
_MODELS: dict[str, nn.Module] = {}  # extractor name -> the loaded classifier torch-fidelity's class wraps


def classifier_extractor(spec, *, data: str | None = None, data_root=None, input_shape=None) -> Extractor:
    """Load a classifier through `load_classifier` and register it with torch-fidelity; returns its Extractor."""
    option = _option(spec, "--features")
    model, meta = _load(spec, what=option, device="cpu", data=data, data_root=data_root, input_shape=input_shape)
    name = f"robustgen-classifier-{_model_key(meta)[:16]}"
    if name in _REGISTERED:
        return dataclasses.replace(_REGISTERED[name], option=option)
    if not hasattr(model, "features") or not hasattr(model, "head"):
        use = "--features inception or another classifier" if option == "--features" else "another classifier"
        raise RobustgenError(f"{option} {spec}: the model has no features()/head, so it cannot serve as a feature extractor: use {use}")
    shape = tuple(int(v) for v in meta["input_shape"])
    feature_dim = _probe_feature_dim(model, shape)  # also says, in one line, when no penultimate features can be had
    _MODELS[name] = model
    _register_fidelity_class(name, shape)
    source = meta.get("source", "robustgen")
    what = "robustgen classifier" if source == "robustgen" else f"{source} classifier"
    knows_data = source in ("robustgen", "robustbench")  # the others record the data they are used on, not what they were trained on
    trained = f", trained on {meta.get('dataset')}" if knows_data else (f", used on {meta.get('dataset')}" if meta.get("dataset") else "")
    extractor = Extractor(
        name=name,
        kind="classifier",
        description=f"{what} {meta.get('weights_path') if source == 'robustgen' else meta.get('spec')} (sha256 {meta['weights_sha256'][:12]}, {meta.get('arch')}{trained}): {NOT_COMPARABLE}",
        comparable_with_papers=False,
        feature_dim=feature_dim,
        input_shape=shape,
        channels=shape[0],
        weights_path=None,
        checkpoint=meta.get("weights_path") if source == "robustgen" else meta.get("spec"),
        checkpoint_sha256=meta["weights_sha256"],
        dataset=meta.get("dataset") if knows_data else None,
        classes=tuple(str(c) for c in meta.get("classes", ())),
        option=option,
    )
    _REGISTERED[name] = extractor
    return extractor


def _load(spec, *, what: str, device, data=None, data_root=None, input_shape=None):
    """load_classifier for --features/--judge (a robustgen checkpoint path is resolved so run dirs can record it)."""
    from robustgen.kernel.models.sources import ModelSpec, load_classifier, split_spec

    text = str(spec)
    if split_spec(text)[0] is None:  # a robustgen checkpoint path: resolved, so run dirs record where it is
        path = Path(text).expanduser()
        if not path.exists():
            use = "--features inception, " if what == "--features" else ""
            raise RobustgenError(f"{what} {text}: no such checkpoint: use {use}a robustgen classifier (best.pt) or another model spec, e.g. python:FILE.py:FACTORY=WEIGHTS")
        resolved = str(path.resolve())
        spec = dataclasses.replace(spec, spec=resolved) if isinstance(spec, ModelSpec) else resolved
    try:
        return load_classifier(spec, device=device, data=data, data_root=data_root, input_shape=input_shape)
    except RobustgenError as exc:
        if what in str(exc):
            raise
        raise RobustgenError(f"{what} {exc}") from None  # name the flag: eval's --judge and score's --features read the same specs


def _model_key(meta: dict) -> str:
    """The weights' sha256 for a robustgen checkpoint (as before: existing caches stay valid); for other sources
    the sha256 of the weights, the source, architecture, normalisation and classes, which all change the features."""
    if meta.get("source", "robustgen") == "robustgen":
        return meta["weights_sha256"]
    described = {k: meta.get(k) for k in ("weights_sha256", "source", "arch", "mean", "std", "input_shape", "classes")}
    return settings_hash(described, length=64)


def _probe_feature_dim(model: nn.Module, shape) -> int:
    with torch.no_grad():
        return int(model.features(torch.zeros(1, *shape)).shape[1])


def _register_fidelity_class(name: str, input_shape: tuple[int, int, int]) -> None:
    from torch_fidelity import FeatureExtractorBase, register_feature_extractor
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    if name in FEATURE_EXTRACTORS_REGISTRY:
        return

    class RobustgenClassifierExtractor(FeatureExtractorBase):
        """uint8 NCHW -> penultimate features ("features") and logits ("logits")."""

        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            self.model = _MODELS[name].to(memory_format=torch.channels_last)
            self.requires_grad_(False)

        @staticmethod
        def get_provided_features_list():
            return (CLASSIFIER_FEATURES, CLASSIFIER_LOGITS)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return {"isc": CLASSIFIER_LOGITS, "fid": CLASSIFIER_FEATURES, "kid": CLASSIFIER_FEATURES, "prc": CLASSIFIER_FEATURES}[metric]

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, *input_shape, dtype=torch.uint8)

        def forward(self, x):
            if x.dtype != torch.uint8:
                raise ValueError("Expecting image as torch.Tensor with dtype=torch.uint8")
            pixels = x.float().div_(255.0)  # the model normalises inside; it takes [0, 1] pixels
            # channels_last: measured 1.3-1.7x faster for these convnets on CPU too; same numbers to ~1e-7
            feats = self.model.features(pixels.contiguous(memory_format=torch.channels_last))
            out = {CLASSIFIER_FEATURES: feats, CLASSIFIER_LOGITS: self.model.head(feats)}
            return tuple(out[k].float() for k in self.features_list)

    RobustgenClassifierExtractor.__name__ = f"RobustgenClassifier_{name[-16:]}"
    register_feature_extractor(name, RobustgenClassifierExtractor)


def load_judge(spec, *, device: torch.device, data: str | None = None, data_root=None, input_shape=None) -> tuple[nn.Module, dict, str]:
    """A classifier (any spec, see `load_classifier`) used as judge: (model on device in eval mode, meta, weights sha256)."""
    model, meta = _load(spec, what=_option(spec, "--judge"), device=device, data=data, data_root=data_root, input_shape=input_shape)
    return model, meta, meta["weights_sha256"]


def _option(spec, default: str) -> str:
    """The flag the user named this model with (a ModelSpec knows it; eval's --judge also serves as feature extractor)."""
    return getattr(spec, "option", None) or default
