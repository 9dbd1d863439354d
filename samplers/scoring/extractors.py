"""Feature extractors for scoring, as torch-fidelity feature extractors.

Two kinds:

- `inception`: torch-fidelity's `inception-v3-compat` (the TF-ported Inception
  the papers use). Its weights are downloaded on first use by torch.hub from
  torch-fidelity's URL; offline, pass `--inception-weights PATH` (a copy of
  weights-inception-2015-12-05-6726825d.pth). Either file is read with
  `torch.load(weights_only=True)` and checked here; torch-fidelity then gets
  the checked tensors re-serialised in memory (`inception_weights_buffer`), so
  it never unpickles a file robustgen did not write.
- a robustgen classifier checkpoint: logits for IS, penultimate features for
  FID/KID/PRC. Registered in torch-fidelity's feature-extractor registry under
  a name derived from the checkpoint's sha256, so cache keys never mix two
  checkpoints. Numbers from it are not comparable with Inception numbers in
  papers.

`samplers.scoring.features` builds the network from the registry and runs it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from robustgen.errors import RobustgenError

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


def resolve_extractor(features: str | os.PathLike, *, inception_weights: str | os.PathLike | None = None) -> Extractor:
    """`"inception"` or a robustgen checkpoint path -> a registered, ready-to-use Extractor."""
    if str(features) == INCEPTION:
        return inception_extractor(inception_weights)
    path = Path(features).expanduser()
    if not path.exists():
        raise RobustgenError(f"--features {features}: no such checkpoint; use --features inception or the path of a robustgen classifier (best.pt)")
    return classifier_extractor(path)


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
            "and pass --inception-weights PATH, or use a robustgen classifier with --features CKPT"
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
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
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


_REGISTERED: dict[str, Extractor] = {}  # checkpoint sha256 -> Extractor (one registration per process)


def classifier_extractor(path: str | os.PathLike) -> Extractor:
    """Register a robustgen checkpoint with torch-fidelity; returns its Extractor description."""
    from robustgen.checkpoint import read_checkpoint
    from robustgen.io import sha256_file

    path = Path(path).expanduser().resolve()
    payload = read_checkpoint(path)  # one clear error for anything that is not a robustgen checkpoint
    sha = sha256_file(path)
    if sha in _REGISTERED:
        return _REGISTERED[sha]
    meta = payload["meta"]
    model = _build(payload, path)
    name = f"robustgen-classifier-{sha[:16]}"
    _register_fidelity_class(name, payload, str(path))
    extractor = Extractor(
        name=name,
        kind="classifier",
        description=f"robustgen classifier {path} (sha256 {sha[:12]}, {meta.get('arch')}, trained on {meta.get('dataset')}): {NOT_COMPARABLE}",
        comparable_with_papers=False,
        feature_dim=int(getattr(model, "feature_dim", 0)) or _probe_feature_dim(model, meta),
        input_shape=tuple(int(v) for v in meta["input_shape"]),
        channels=int(meta["input_shape"][0]),
        weights_path=None,
        checkpoint=str(path),
        checkpoint_sha256=sha,
        dataset=meta.get("dataset"),
        classes=tuple(str(c) for c in meta.get("classes", ())),
    )
    _REGISTERED[sha] = extractor
    return extractor


def _build(payload: dict, path: Path) -> nn.Module:
    from robustgen.checkpoint import model_from_payload

    model = model_from_payload(payload, source=str(path))
    if not hasattr(model, "features") or not hasattr(model, "head"):
        raise RobustgenError(f"{path}: the model has no features()/head, so it cannot serve as a feature extractor")
    return model.eval()


def _probe_feature_dim(model: nn.Module, meta: dict) -> int:
    with torch.no_grad():
        return int(model.features(torch.zeros(1, *meta["input_shape"])).shape[1])


def _register_fidelity_class(name: str, payload: dict, path: str) -> None:
    from torch_fidelity import FeatureExtractorBase, register_feature_extractor
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    if name in FEATURE_EXTRACTORS_REGISTRY:
        return

    class RobustgenClassifierExtractor(FeatureExtractorBase):
        """uint8 NCHW -> penultimate features ("features") and logits ("logits")."""

        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            self.model = _build(payload, Path(path)).to(memory_format=torch.channels_last)
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
            return torch.zeros(1, *payload["meta"]["input_shape"], dtype=torch.uint8)

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


def load_judge(path: str | os.PathLike, *, device: torch.device) -> tuple[nn.Module, dict, str]:
    """A classifier used as judge: (model on device in eval mode, meta, sha256)."""
    from robustgen.checkpoint import load_checkpoint
    from robustgen.io import sha256_file

    path = Path(path).expanduser()
    model, meta = load_checkpoint(path, device=device)
    return model, meta, sha256_file(path)
