"""The one feature-extraction stage of scoring: images in, `{layer: features}` out.

    network = build_network(extractor, layers=["2048", "logits_unbiased"], device=dev)
    feats = extract_features(network, images_nhwc, channels=3, batch_size=200, device=dev)
    feats["2048"]  # float32 (N, 2048) on the CPU

The network is torch-fidelity's feature extractor, built from its registry
(`create_feature_extractor(name, layers, cuda=False)`, then moved to the device
here: no `.cuda()`), and run on uint8 NCHW batches under `torch.no_grad()`
exactly as `torch_fidelity.calculate_metrics` runs it, so metrics computed from
these features equal torch-fidelity's own. Extraction stays in this one
function so that it can later be sharded across ranks (issue 11).

Reference features (dataset splits) are cached by robustgen itself
(`samplers.scoring.feature_cache`); sample features are never cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from robustgen.kernel import distributed
from robustgen.kernel.errors import RobustgenError
from samplers.scoring import feature_cache as score_cache
from samplers.scoring.extractors import Extractor
from samplers.scoring.inputs import Reference

FIDELITY_METRIC_NAMES = {"is": "isc", "fid": "fid", "kid": "kid", "prc": "prc"}  # ours -> torch-fidelity's


def metric_layer(extractor: Extractor, metric: str) -> str:
    """The feature layer torch-fidelity uses for `metric` ("is", "fid", "kid", "prc") with this extractor."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    cls = FEATURE_EXTRACTORS_REGISTRY[extractor.name]
    return cls.get_default_feature_layer_for_metric(FIDELITY_METRIC_NAMES[metric])


def build_network(extractor: Extractor, *, layers: Sequence[str], device: torch.device, verbose: bool = False) -> torch.nn.Module:
    """torch-fidelity's feature extractor for `extractor`, producing `layers`, in eval mode on `device`."""
    from torch_fidelity.utils import create_feature_extractor

    options = {"verbose": verbose}
    if extractor.kind == "inception":
        from samplers.scoring.extractors import inception_weights_buffer

        options["feature_extractor_weights_path"] = inception_weights_buffer(extractor)
    try:
        network = create_feature_extractor(extractor.name, sorted(set(layers)), cuda=False, **options)
    except ValueError as exc:  # torch-fidelity's vassert
        raise RobustgenError(f"torch-fidelity rejected the feature extractor: {str(exc).splitlines()[0][:200]}") from None
    return network.to(device)


def extract_features(
    network: torch.nn.Module,
    images_nhwc: np.ndarray,
    *,
    channels: int,
    batch_size: int,
    device: torch.device,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Run `network` over uint8 NHWC images: {layer: float32 (N, D) CPU tensor}.

    `channels` is what the network takes: grayscale images are repeated to 3
    channels for Inception (an RGB model). Batches are contiguous slices in
    order, like torch-fidelity's DataLoader, so features do not depend on how
    a caller chunks the work beyond `batch_size`. Under torchrun the batches are
    dealt to ranks round-robin and gathered: every rank gets every feature, the
    same numbers as one process (each batch is the same batch either way).
    """
    from tqdm.auto import tqdm

    dist = distributed.for_device(device)
    images = torch.from_numpy(np.ascontiguousarray(images_nhwc)).permute(0, 3, 1, 2)
    if images.shape[1] != channels:
        images = images.expand(-1, channels, -1, -1)
    starts = dist.shard(list(range(0, len(images), batch_size)))
    out: dict[str, list[torch.Tensor]] = {layer: [] for layer in network.get_requested_features_list()}
    with torch.no_grad(), tqdm(total=len(images), unit="img", desc="features", leave=False, disable=not (progress and dist.is_main)) as bar:
        for start in starts:
            batch = images[start : start + batch_size].contiguous().to(device, non_blocking=device.type == "cuda")
            values = network.convert_features_tuple_to_dict(network(batch))
            for layer, value in values.items():
                out[layer].append(value.detach().to("cpu", torch.float32))
            bar.update(len(batch) * dist.world_size)
    rows = torch.cat([torch.arange(s, min(s + batch_size, len(images))) for s in starts]) if starts else torch.zeros(0, dtype=torch.long)
    return {layer: dist.gather_rows(torch.cat(parts) if parts else torch.zeros(0), rows) for layer, parts in out.items()}


@dataclass(frozen=True, eq=False)
class ReferenceFeatures:
    """Features of one reference split, and where they came from."""

    split: str
    features: dict[str, torch.Tensor]  # layer -> float32 (N, D)
    cached: bool  # every layer came from the cache
    repaired: tuple[str, ...] = ()  # cache files that were unreadable and have been recomputed


def reference_features(
    reference: Reference,
    *,
    network: torch.nn.Module,
    extractor: Extractor,
    layers: Sequence[str],
    cache_dir: Path | None,
    batch_size: int,
    device: torch.device,
    progress: bool = False,
) -> ReferenceFeatures:
    """Features of a reference split: from robustgen's cache when there, else extracted (and cached)."""
    layers = sorted(set(layers))
    converted = extractor.channels if reference.image_shape[0] != extractor.channels else None
    key = score_cache.reference_key(reference.fingerprint, reference.split, extractor_name=extractor.name, channels=converted)
    found: dict[str, torch.Tensor] = {}
    repaired: list[str] = []
    for layer in layers if cache_dir is not None else ():
        path = score_cache.feature_path(cache_dir, key, layer)
        arrays, corrupt = score_cache.read_arrays(path, ("features",))
        value = arrays["features"] if arrays is not None else None
        if value is not None and value.ndim == 2 and len(value) == len(reference) and value.dtype == np.float32:
            found[layer] = torch.from_numpy(value)
        elif corrupt or value is not None:  # unreadable, or arrays of the wrong shape: recompute and replace
            repaired.append(path.name)
    missing = [layer for layer in layers if layer not in found]
    if missing:
        fresh = extract_features(network, reference.images, channels=extractor.channels, batch_size=batch_size, device=device, progress=progress)
        found.update({layer: fresh[layer] for layer in missing})
        if cache_dir is not None:
            for layer in missing:
                score_cache.write_arrays(score_cache.feature_path(cache_dir, key, layer), {"features": found[layer].numpy()})
            score_cache.describe(cache_dir, key, extractor=extractor.name, dataset=reference.spec, split=reference.split, n_images=len(reference))
    return ReferenceFeatures(reference.split, {layer: found[layer] for layer in layers}, cached=not missing, repaired=tuple(repaired))
