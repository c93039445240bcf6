"""Stable Diffusion backbone: image -> latent -> one UNet pass -> self-attention maps (DiffSeg steps 2-4).

:class:`StableDiffusionBackbone` holds the VAE, UNet, text encoder(s) and tokenizer(s) of a Stable
Diffusion checkpoint (safetensors only) and computes, for a batch of images in [-1, 1], the
per-resolution self-attention maps {s: (B, s*s, s*s) float32} of one UNet pass at t = 300
conditioned on the empty prompt, as the official DiffSeg code does (latent mean, no noise).

Every family a researcher would try works, recognised from the model's own configs
(:mod:`diffseg.families`): SD 1.x, SD 2.x base (512 px) and v-prediction (768 px), SDXL and its
distillations SSD-1B and Segmind-Vega. For the SDXL family the empty prompt is embedded by both
text encoders (penultimate hidden states, concatenated) and the UNet also gets the pooled embedding
of the second encoder and the time ids (original size, crop (0, 0), target size = the input size)
in ``added_cond_kwargs``, as diffusers' SDXL pipeline does for a prompt.

Loading: a hub id or a local diffusers folder (optionally ``variant="fp16"`` weight files), or one
original-layout ``.safetensors`` file (``from_single_file``; it needs the diffusers configs of the
same model: ``config=`` a local folder or a hub id, otherwise guessed from the checkpoint's keys).

Precision: the SDXL VAE overflows in float16, so with ``dtype=float16`` an SDXL-family VAE whose
config says ``force_upcast`` encodes in float32 (or name a float16-safe VAE with ``vae=``).
Non-finite latents or attention maps always raise :class:`NonFiniteOutputError` naming the model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import numbers
import os
import re
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    UNet2DConditionModel,
)
from diffusers.utils import is_accelerate_available
from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import safe_open
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from diffseg.capture import available_memory, capture_self_attention, capture_self_attention_reference
from diffseg.devices import resolve_device, resolve_dtype
from diffseg.diffcut import capture_diffcut_features, diffcut_noisy_latents
from diffseg.families import BackboneFamily, detect_family
from diffseg.pipelines import StableDiffusionPipeline, StableDiffusionXLPipeline

__all__ = [
    "DEFAULT_MODEL_ID",
    "SD_SCHEDULER_CONFIG",
    "SINGLE_FILE_DEFAULT_CONFIGS",
    "BackboneLoadError",
    "NonFiniteOutputError",
    "StableDiffusionBackbone",
    "single_file_kind",
]

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "CompVis/stable-diffusion-v1-4"

# Training noise schedule of SD 1.x, 2.x and SDXL (DDPMScheduler arguments matching their
# ``scheduler/`` configs); only used by noise=True.
SD_SCHEDULER_CONFIG: dict = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "steps_offset": 1,
}

# Diffusers configs used for a single-file checkpoint when no ``config=`` is given, by what its keys
# show: the text encoder layout, and for SDXL-type files the transformer depth of the deepest down
# block (10 SDXL, 4 SSD-1B, 2 Segmind-Vega). SD 2.x files cannot tell base (512, epsilon) from 768
# (v-prediction) by their keys: the 768 model is assumed, as diffusers does.
SINGLE_FILE_DEFAULT_CONFIGS: dict[str, str] = {
    "sd1": "CompVis/stable-diffusion-v1-4",
    "sd2": "stabilityai/stable-diffusion-2-1",
    "sdxl-10": "stabilityai/stable-diffusion-xl-base-1.0",
    "sdxl-4": "segmind/SSD-1B",
    "sdxl-2": "segmind/Segmind-Vega",
}
_CONFIG_PATTERNS = ["*.json", "*/*.json", "*.txt", "*/*.txt", "*/*.model"]
_PICKLED_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl")
_OFFLINE_ON = "offline mode is on: HF_HUB_OFFLINE or local_files_only"
_OFFLINE_HINT = (
    "no network / not in cache; set HF_HUB_OFFLINE=1 with a local copy in the Hugging Face cache, "
    "or pass a local path to a diffusers-format folder"
)
_FP16_VAE_HINT = (
    "use model.dtype=float32 (the default) or bfloat16, or name a float16-safe VAE "
    "(model.backbone.vae=madebyollin/sdxl-vae-fp16-fix for the SDXL family)"
)


class BackboneLoadError(RuntimeError):
    """A Stable Diffusion checkpoint could not be loaded (not found, not fetchable, no safetensors, unsupported)."""


class NonFiniteOutputError(RuntimeError):
    """The VAE or the UNet produced NaN/inf values (typically a float16 overflow); the message names the model."""


def _env_offline() -> bool:
    """HF_HUB_OFFLINE read at call time (huggingface_hub reads it only once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


HUB_PROBE_TIMEOUT = 5.0  # seconds for one connection to the hub before loading from it


def hub_unreachable(timeout: float = HUB_PROBE_TIMEOUT) -> str | None:
    """Why the Hugging Face hub (``huggingface_hub.constants.ENDPOINT``, ``HF_ENDPOINT``) cannot be reached,
    from one connection attempt bounded by ``timeout`` seconds; None when it answers.

    Without it, a loader on a machine with no network retries each file several times (about 30 s)
    before it says that the weights are missing.
    """
    from huggingface_hub import constants

    from diffseg.network import unreachable  # the project's one network probe (stdlib only)

    failed = unreachable([constants.ENDPOINT], timeout=timeout)
    if not failed:
        return None
    return "the Hugging Face hub cannot be reached (" + "; ".join(f"{h}: {r}" for h, r in failed.items()) + ")"


def _is_hub_id(name: str) -> bool:
    """True for a name that only the hub can resolve (no such local file or folder, not path-shaped)."""
    return not Path(name).expanduser().exists() and not _looks_like_path(name) \
        and not name.lower().endswith((".safetensors", *_PICKLED_SUFFIXES))


def _looks_like_path(model_id: str) -> bool:
    """True for ids that can only be filesystem paths (a hub id is ``name`` or ``owner/name``)."""
    return model_id.startswith(("/", ".", "~")) or "\\" in model_id or model_id.count("/") > 1


def _read_json(path: Path) -> dict:
    """A JSON file's content, {} when it is missing or broken (the loader reports those itself)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _folder_components(root: Path, with_vae: bool) -> tuple[list[str], list[str]]:
    """(weight folders, tokenizer folders) a local diffusers folder needs; SDXL-type UNets need the second encoder."""
    unet_config = _read_json(root / "unet" / "config.json")
    second = unet_config.get("addition_embed_type") == "text_time"
    weights = (["vae"] if with_vae else []) + ["unet", "text_encoder"] + (["text_encoder_2"] if second else [])
    tokenizers = ["tokenizer"] + (["tokenizer_2"] if second else [])
    return weights, tokenizers


def _check_local_folder(root: Path, model_id: str, variant: str | None, with_vae: bool = True) -> None:
    """Raise BackboneLoadError unless ``root`` has safetensors weights for every model folder + tokenizers."""
    pattern = f"*.{variant}*.safetensors" if variant else "*.safetensors"  # also matches sharded files
    weights, tokenizers = _folder_components(root, with_vae)
    for folder in (*weights, *tokenizers):
        if not (root / folder).is_dir():
            raise BackboneLoadError(
                f"cannot load Stable Diffusion model {model_id!r}: the local folder has no {folder}/ "
                f"subfolder (expected a diffusers-format folder: {'/, '.join([*weights, *tokenizers])}/)"
            )
    for folder in weights:
        if not any((root / folder).glob(pattern)):
            others = sorted(p.name for p in (root / folder).iterdir() if p.suffix in {".bin", ".ckpt", ".pt"})
            found = f" (found only {', '.join(others)})" if others else ""
            raise BackboneLoadError(
                f"cannot load Stable Diffusion model {model_id!r}: no safetensors weights ({pattern}) in "
                f"{folder}/{found}; this harness loads safetensors only (never pickled checkpoints) - "
                "convert the weights to safetensors or use a revision that has them"
            )


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes/contexts, outermost first."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _load_error(model_id: str, component: str, exc: BaseException, *, offline: str, local: bool) -> BackboneLoadError:
    """Translate a hub/loader exception into one clear BackboneLoadError naming the model id.

    ``offline``: why only local files were read (:data:`_OFFLINE_ON`, or the failed hub probe); "" when online.
    """
    chain = _chain(exc)
    if local:
        return BackboneLoadError(
            f"cannot load Stable Diffusion model {model_id!r}: loading {component}/ from the local folder "
            f"failed ({type(exc).__name__}: {exc})"
        )
    what = f"cannot load Stable Diffusion model {model_id!r}: could not fetch {component}/"
    if offline and offline != _OFFLINE_ON:  # the hub did not answer the probe: only the local cache was read
        reason = (f"its files are not in the local Hugging Face cache and {offline}; run once with network, "
                  "or pass a local path to a diffusers-format folder")
    elif any(isinstance(e, LocalEntryNotFoundError) for e in chain) or offline:
        reason = _OFFLINE_HINT + (f" ({offline})" if offline else "")
    elif any(isinstance(e, RepositoryNotFoundError) for e in chain):
        reason = "no such model repository on the Hugging Face hub (or it is private/gated: log in first)"
    elif any(isinstance(e, RevisionNotFoundError) for e in chain):
        reason = "the requested revision does not exist"
    elif any(isinstance(e, EntryNotFoundError) and not isinstance(e, LocalEntryNotFoundError) for e in chain) \
            and "safetensors" in str(exc):  # a file missing on the hub (RemoteEntryNotFoundError since hub 1.0)
        reason = (
            "the repository has no safetensors weights for it; this harness loads safetensors only "
            "(never pickled checkpoints)"
        )
    else:
        reason = _OFFLINE_HINT
    return BackboneLoadError(f"{what} ({reason}). Original error: {type(exc).__name__}: {exc}")


# ------------------------------------------------------------------------------------------ single file
def single_file_kind(path: str | os.PathLike) -> str:
    """What an original-layout (CompVis / Stability) ``.safetensors`` checkpoint holds, from its keys only.

    Returns ``"sd1"`` (CLIP text encoder under ``cond_stage_model.transformer.``), ``"sd2"``
    (OpenCLIP under ``cond_stage_model.model.``) or ``"sdxl-<depth>"`` (two encoders under
    ``conditioner.embedders.``; depth = transformer layers of the deepest down block). Only the
    header is read. Raises BackboneLoadError for anything else.
    """
    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
    if any(k.startswith("conditioner.embedders.1.") for k in keys):
        block = re.compile(r"^model\.diffusion_model\.input_blocks\.[78]\.1\.transformer_blocks\.(\d+)\.")
        depths = [int(m.group(1)) + 1 for k in keys if (m := block.match(k))]
        return f"sdxl-{max(depths, default=0)}"
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return "sd2"
    if any(k.startswith("cond_stage_model.transformer.") for k in keys):
        return "sd1"
    raise BackboneLoadError(
        f"cannot load single-file checkpoint {str(path)!r}: no Stable Diffusion text encoder keys "
        "(cond_stage_model.* / conditioner.embedders.*) - not an SD 1.x/2.x/SDXL checkpoint in the original layout"
    )


def _resolve_config_dir(config: str, checkpoint: str, *, offline: str, cache_dir: str | os.PathLike | None) -> Path:
    """Local folder holding the diffusers configs (``model_index.json`` + one folder per component)."""
    folder = Path(config).expanduser()
    if folder.is_dir():
        if not (folder / "model_index.json").is_file():
            raise BackboneLoadError(
                f"cannot load single-file checkpoint {checkpoint!r}: config folder {str(folder)!r} has no "
                "model_index.json (pass a diffusers pipeline folder of the same model; its configs are enough)"
            )
        return folder
    if folder.exists() or _looks_like_path(config):
        raise BackboneLoadError(
            f"cannot load single-file checkpoint {checkpoint!r}: config {config!r} is no folder (and not a hub id)"
        )
    try:
        return Path(snapshot_download(config, allow_patterns=_CONFIG_PATTERNS, local_files_only=bool(offline),
                                      cache_dir=cache_dir))
    except Exception as exc:  # every hub failure becomes one clear error
        missing = offline or any(isinstance(e, LocalEntryNotFoundError) for e in _chain(exc))
        reason = (f"they are not in the Hugging Face cache and {offline or _OFFLINE_ON}" if missing
                  else f"{type(exc).__name__}: {exc}")
        raise BackboneLoadError(
            f"cannot load single-file checkpoint {checkpoint!r}: the diffusers configs {config!r} it needs could "
            f"not be resolved ({reason}). Pass config=<local diffusers folder of the same model (configs only are "
            "enough)> or config=<hub id>, or run once online so the configs are cached"
        ) from exc


# ------------------------------------------------------------------------------------------------ model
class StableDiffusionBackbone:
    """VAE + UNet + text encoder(s)/tokenizer(s) (for the empty prompt) of a Stable Diffusion checkpoint.

    Attributes: ``vae``, ``unet``, ``text_encoder``, ``tokenizer``, ``text_encoder_2`` and
    ``tokenizer_2`` (SDXL family, else None), ``scheduler`` (noise schedule for ``noise=True``),
    ``family`` (:class:`~diffseg.families.BackboneFamily`, from the configs), ``input_size`` (the
    image side this backbone is meant to get: the family's native size unless set), ``name``,
    ``device``, ``dtype`` and ``vae_dtype``. All modules are in eval mode on ``device``. Not
    thread-safe (the UNet's processors are swapped during a pass).
    """

    def __init__(
        self,
        vae: AutoencoderKL,
        unet: UNet2DConditionModel,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        *,
        text_encoder_2: CLIPTextModelWithProjection | None = None,
        tokenizer_2: CLIPTokenizer | None = None,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        scheduler: Any | None = None,
        name: str = "custom",
        input_size: int | None = None,
    ) -> None:
        self.name = name
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.scheduler = scheduler if scheduler is not None else DDPMScheduler(**SD_SCHEDULER_CONFIG)
        self.family: BackboneFamily = detect_family(unet.config, self.scheduler.config, vae.config)
        if self.family.uses_time_ids:
            if text_encoder_2 is None or tokenizer_2 is None:
                raise ValueError(f"{name}: {self.family.title} needs text_encoder_2 and tokenizer_2")
            _check_time_embedding(unet, text_encoder_2, name)
        # diffusers' SDXL pipeline rule: a float16 VAE whose config asks for it is upcast (the SDXL VAE overflows)
        upcast = self.dtype == torch.float16 and self.family.uses_time_ids and bool(vae.config.get("force_upcast"))
        self.vae_dtype = torch.float32 if upcast else self.dtype
        self.vae = _prepare(vae, self.device, self.vae_dtype)
        self.unet = _prepare(unet, self.device, self.dtype)
        self.text_encoder = _prepare(text_encoder, self.device, self.dtype)
        self.tokenizer = tokenizer
        self.text_encoder_2 = _prepare(text_encoder_2, self.device, self.dtype) if text_encoder_2 is not None else None
        self.tokenizer_2 = tokenizer_2
        self.input_size = int(input_size) if input_size else self.family.native_size
        self._empty: tuple[torch.Tensor, torch.Tensor | None] | None = None
        # True only for weights loaded from a checkpoint (from_pretrained); results of a backbone
        # built from components (random or hand-made weights) are labelled as such by the harness.
        self.pretrained = False

    def __repr__(self) -> str:
        return (f"StableDiffusionBackbone({self.name!r}, family={self.family.name}, input_size={self.input_size}, "
                f"dtype={self.dtype}, device={self.device})")

    # ------------------------------------------------------------------------------------ construction
    @classmethod
    def from_components(
        cls,
        vae: AutoencoderKL,
        unet: UNet2DConditionModel,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        *,
        text_encoder_2: CLIPTextModelWithProjection | None = None,
        tokenizer_2: CLIPTokenizer | None = None,
        scheduler: Any | None = None,
        name: str = "custom",
        input_size: int | None = None,
    ) -> StableDiffusionBackbone:
        """Wrap already-built modules (moved to ``device``/``dtype``; defaults as in from_pretrained)."""
        return cls(vae, unet, text_encoder, tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
                   dtype=dtype, device=device, scheduler=scheduler, name=name, input_size=input_size)

    @classmethod
    def from_pretrained(
        cls,
        model_id: str | os.PathLike = DEFAULT_MODEL_ID,
        *,
        revision: str | None = None,
        variant: str | None = None,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        local_files_only: bool = False,
        cache_dir: str | os.PathLike | None = None,
        config: str | os.PathLike | None = None,
        vae: str | os.PathLike | None = None,
        input_size: int | None = None,
    ) -> StableDiffusionBackbone:
        """Load a Stable Diffusion checkpoint of any family, safetensors weights only.

        Args:
            model_id: hub id, local diffusers folder, or one original-layout ``.safetensors`` file.
            revision, cache_dir, local_files_only: as in diffusers (HF_HUB_OFFLINE=1, read at call
                time, implies ``local_files_only``). Otherwise, when anything is to come from the hub, one
                short probe (:func:`hub_unreachable`) runs first; a hub that does not answer means local
                files only: a cached copy loads, a missing one fails at once, in one message naming it.
            variant: weight-file variant of a hub repo / folder, e.g. ``"fp16"``
                (``diffusion_pytorch_model.fp16.safetensors``; smaller downloads, weights then cast to
                ``dtype``).
            dtype: float32 (default, TF32 off), float16 or bfloat16; device: CUDA when available
                (:mod:`diffseg.devices`).
            config: single files only: the diffusers configs of the same model (local folder with
                ``model_index.json``, or a hub id); default guessed from the checkpoint's keys
                (:data:`SINGLE_FILE_DEFAULT_CONFIGS`).
            vae: hub id or folder of a replacement VAE (e.g. a float16-safe SDXL VAE).
            input_size: image side the backbone is meant to get (default: the family's native size);
                a different size only logs a warning.

        Any failure raises :class:`BackboneLoadError` naming ``model_id`` and what went wrong.
        """
        name = str(model_id)
        device = resolve_device(device)
        dtype = resolve_dtype(dtype)
        offline = _OFFLINE_ON if local_files_only or _env_offline() else ""
        local = Path(name).expanduser()
        single = local.is_file() or name.lower().endswith((".safetensors", *_PICKLED_SUFFIXES))
        if single:  # a loadable single file whose configs come from the hub (the defaults are hub ids)
            from_hub = local.is_file() and local.suffix.lower() == ".safetensors" and variant is None \
                and revision is None and (config is None or _is_hub_id(str(config)))
        else:
            from_hub = config is None and _is_hub_id(name)
        from_hub = from_hub or (vae is not None and _is_hub_id(str(vae)))
        if not offline and from_hub:
            offline = hub_unreachable() or ""  # no network: read the local cache only, fail fast without it
            if offline:
                logger.warning("%s: %s; loading from the local cache only", name, offline)
        hub = {"local_files_only": bool(offline), "cache_dir": cache_dir}
        if single:
            if variant is not None or revision is not None:
                raise BackboneLoadError(f"cannot load single-file checkpoint {name!r}: variant= and revision= apply "
                                        "to hub repos and diffusers folders, not to one file")
            parts = cls._single_file_parts(local, name, config=config, dtype=dtype, offline=offline,
                                           cache_dir=cache_dir)
        else:
            if config is not None:
                raise BackboneLoadError(f"cannot load Stable Diffusion model {name!r}: config= applies to single-file "
                                        "checkpoints only (a diffusers folder or hub repo has its own configs)")
            parts = cls._folder_parts(local, name, revision=revision, variant=variant, dtype=dtype, offline=offline,
                                      hub=hub, with_vae=vae is None)
        if vae is not None:
            parts["vae"] = _load_vae(str(vae), name, dtype=dtype, hub=hub)
        try:
            backbone = cls(**parts, dtype=dtype, device=device, name=name, input_size=input_size)
        except ValueError as exc:  # UnsupportedModelError included
            raise BackboneLoadError(f"cannot use Stable Diffusion model {name!r}: {exc}") from exc
        backbone.pretrained = True
        logger.info("%s: %s", name, backbone.family.describe())
        if input_size and int(input_size) != backbone.family.native_size:
            logger.warning("%s: input size %d px differs from the %s native size %d px", name, int(input_size),
                           backbone.family.name, backbone.family.native_size)
        return backbone

    @staticmethod
    def _folder_parts(
        local: Path, name: str, *, revision: str | None, variant: str | None, dtype: torch.dtype, offline: str,
        hub: dict[str, Any], with_vae: bool,
    ) -> dict[str, Any]:
        """Components of a hub repo or local diffusers folder (no ``vae`` key when ``with_vae`` is False)."""
        is_local = local.is_dir()
        if is_local:
            _check_local_folder(local, name, variant, with_vae=with_vae)
            source = str(local)
        elif _looks_like_path(name):
            raise BackboneLoadError(
                f"cannot load Stable Diffusion model {name!r}: no such local folder (and not a hub id)"
            )
        else:
            source = name
        hub = {**hub, "revision": revision}
        weights = {**hub, "variant": variant, "use_safetensors": True}

        def load(component: str, loader, **kwargs):
            try:
                return loader(source, subfolder=component, **kwargs)
            except Exception as exc:  # every loader failure becomes one clear error
                raise _load_error(name, component, exc, offline=offline, local=is_local) from exc

        # low_cpu_mem_usage needs accelerate; asking for it without accelerate only logs a warning
        diffusers_kwargs = {**weights, "torch_dtype": dtype, "low_cpu_mem_usage": is_accelerate_available()}
        parts: dict[str, Any] = {}
        parts["unet"] = load("unet", UNet2DConditionModel.from_pretrained, **diffusers_kwargs)
        if with_vae:
            parts["vae"] = load("vae", AutoencoderKL.from_pretrained, **diffusers_kwargs)
        parts["text_encoder"] = load("text_encoder", CLIPTextModel.from_pretrained, **weights)
        parts["tokenizer"] = load("tokenizer", CLIPTokenizer.from_pretrained, **hub)
        if parts["unet"].config.get("addition_embed_type") == "text_time":
            parts["text_encoder_2"] = load("text_encoder_2", CLIPTextModelWithProjection.from_pretrained, **weights)
            parts["tokenizer_2"] = load("tokenizer_2", CLIPTokenizer.from_pretrained, **hub)
        try:
            parts["scheduler"] = DDPMScheduler.from_pretrained(source, subfolder="scheduler", **hub)
        except Exception as exc:  # the schedule matters for noise=True and tells SD 2.x v-prediction apart
            logger.warning("%s: no scheduler config (%s); using SD's default noise schedule (epsilon)", name, exc)
        return parts

    @staticmethod
    def _single_file_parts(
        path: Path, name: str, *, config: str | os.PathLike | None, dtype: torch.dtype, offline: str,
        cache_dir: str | os.PathLike | None,
    ) -> dict[str, Any]:
        """Components of one original-layout ``.safetensors`` file, through diffusers' ``from_single_file``."""
        if path.suffix.lower() != ".safetensors":
            raise BackboneLoadError(
                f"cannot load single-file checkpoint {name!r}: only .safetensors files are loaded (never pickled "
                ".ckpt/.bin/.pt files, which can run code); convert it to safetensors first"
            )
        if not path.is_file():
            raise BackboneLoadError(f"cannot load single-file checkpoint {name!r}: no such file")
        kind = single_file_kind(path)
        if config is None:
            config = SINGLE_FILE_DEFAULT_CONFIGS.get(kind)
            if config is None:
                raise BackboneLoadError(
                    f"cannot load single-file checkpoint {name!r}: an SDXL-type checkpoint whose transformer depth "
                    f"({kind}) matches no known model; pass config=<diffusers folder or hub id of the same model>"
                )
            logger.info("%s: using the diffusers configs of %s (guessed from the checkpoint keys; pass config= "
                        "to choose)", name, config)
        config_dir = _resolve_config_dir(str(config), name, offline=offline, cache_dir=cache_dir)
        if kind.startswith("sdxl"):
            pipeline_class, skip = StableDiffusionXLPipeline, {"image_encoder": None, "feature_extractor": None}
        else:
            pipeline_class = StableDiffusionPipeline
            skip = {"image_encoder": None, "feature_extractor": None, "safety_checker": None}
        try:
            pipe = pipeline_class.from_single_file(str(path), config=str(config_dir), torch_dtype=dtype,
                                                   local_files_only=True, **skip)
        except Exception as exc:  # every loader failure becomes one clear error
            raise BackboneLoadError(
                f"cannot load single-file checkpoint {name!r} with the configs of {str(config)!r} "
                f"({type(exc).__name__}: {exc}); check that config= names the same model"
            ) from exc
        parts = {"vae": pipe.vae, "unet": pipe.unet, "text_encoder": pipe.text_encoder, "tokenizer": pipe.tokenizer,
                 "scheduler": DDPMScheduler.from_config(pipe.scheduler.config)}
        if getattr(pipe, "text_encoder_2", None) is not None:
            parts["text_encoder_2"] = pipe.text_encoder_2
            parts["tokenizer_2"] = pipe.tokenizer_2
        return parts

    # ------------------------------------------------------------------------------------------- compute
    def _encode_empty_prompt(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(context (1, 77, D), pooled (1, P) or None) of the empty prompt "", as the pipelines embed it.

        SD 1.x/2.x: the text encoder's last hidden state. SDXL family: the penultimate hidden states of
        both encoders concatenated (D = D1 + D2) and the second encoder's projected pooled output.
        """
        def tokens(tokenizer: CLIPTokenizer) -> torch.Tensor:
            return tokenizer("", padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                             return_tensors="pt").input_ids.to(self.device)

        if self.text_encoder_2 is None:
            return self.text_encoder(tokens(self.tokenizer))[0], None
        hidden = []
        pooled = None
        for tokenizer, encoder in ((self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2)):
            out = encoder(tokens(tokenizer), output_hidden_states=True)
            if out[0].ndim == 2:  # CLIPTextModelWithProjection: text_embeds (1, P)
                pooled = out[0]
            hidden.append(out.hidden_states[-2])
        if pooled is None:
            raise ValueError(f"{self.name}: text_encoder_2 gives no pooled projection (CLIPTextModelWithProjection "
                             "expected)")
        return torch.cat(hidden, dim=-1), pooled

    def _empty_prompt(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._empty is None:
            # normal tensors (not inference tensors) even when first needed inside inference_mode
            with torch.inference_mode(False), torch.no_grad():
                context, pooled = self._encode_empty_prompt()
            self._empty = (context.to(self.dtype), None if pooled is None else pooled.to(self.dtype))
        return self._empty

    @property
    def empty_context(self) -> torch.Tensor:
        """Embedding of the empty prompt "", shape (1, 77, cross_attention_dim), computed once and cached."""
        return self._empty_prompt()[0]

    @property
    def empty_pooled(self) -> torch.Tensor | None:
        """SDXL family: the pooled embedding (1, P) of the empty prompt for ``added_cond_kwargs``; else None."""
        return self._empty_prompt()[1]

    def unet_inputs(self, batch: int, image_size: tuple[int, int]) -> dict[str, Any]:
        """Keyword arguments of the UNet call besides latents and timesteps, for ``batch`` images of ``image_size``.

        ``encoder_hidden_states`` (B, 77, D); for the SDXL family also ``added_cond_kwargs`` with
        ``text_embeds`` (B, P) and ``time_ids`` (B, 6) = (H, W, 0, 0, H, W): original size = target
        size = the input image size, no crop.
        """
        context, pooled = self._empty_prompt()
        kwargs: dict[str, Any] = {"encoder_hidden_states": context.expand(batch, -1, -1)}
        if pooled is not None:
            height, width = (int(v) for v in image_size)
            time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=self.dtype, device=self.device)
            kwargs["added_cond_kwargs"] = {"text_embeds": pooled.expand(batch, -1),
                                           "time_ids": time_ids.expand(batch, -1)}
        return kwargs

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] -> latents (B, 4, H/8, W/8) = VAE latent mean * scaling factor.

        No sampling (the mean of the latent distribution, as the official DiffSeg code). The VAE runs in
        ``vae_dtype``; latents are returned in the model dtype. Raises :class:`NonFiniteOutputError`
        naming the model when any latent is NaN/inf.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        x = images.to(device=self.device, dtype=self.vae_dtype)
        latents = self.vae.encode(x).latent_dist.mean * self.vae.config.scaling_factor
        bad = int((~torch.isfinite(latents).flatten(1).all(dim=1)).sum())
        if bad:
            raise NonFiniteOutputError(
                f"{self.name}: the VAE encoder produced non-finite latents (NaN/inf) for {bad} of {latents.shape[0]} "
                f"image(s) in {self.vae_dtype}; {_FP16_VAE_HINT}"
            )
        return latents.to(self.dtype)

    @torch.inference_mode()
    def add_noise(self, latents: torch.Tensor, timestep: int, seed: int = 0) -> torch.Tensor:
        """Forward-diffuse latents (B, 4, h, w) to ``timestep`` with the scheduler.

        Every image draws its noise from its own CPU generator seeded with ``seed``, so an
        image gets the same noise whatever batch it is in (resumed and sharded runs agree).
        """
        noise = torch.stack([
            torch.randn(latents.shape[1:], generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
            for _ in range(latents.shape[0])
        ])
        noise = noise.to(device=latents.device, dtype=latents.dtype)
        timesteps = torch.full((latents.shape[0],), timestep, dtype=torch.long, device=latents.device)
        return self.scheduler.add_noise(latents, noise, timesteps)

    @torch.inference_mode()
    def attention_maps(
        self,
        images: torch.Tensor,
        timestep: int = 300,
        noise: bool = False,
        seed: int = 0,
        *,
        head_chunk: int | None = None,
        reference: bool = False,
    ) -> dict[int, torch.Tensor]:
        """images (B, 3, H, W) in [-1, 1] -> {s: (B, s*s, s*s) float32} self-attention maps.

        Encode (latent mean), optionally add seeded noise at ``timestep`` (off by default, as the
        official code), run one UNet pass at ``timestep`` with the empty-prompt conditioning and return
        the head- and layer-averaged self-attention per resolution, largest side first (SD 1.x at
        512 px: s = 64, 32, 16, 8; SD 2.x at 768 px: 96, 48, 24, 12; SDXL at 1024 px: 64, 32).
        ``head_chunk``: heads computed at once in the capture; None chooses it per layer from the free
        device memory (CUDA; all heads on the CPU). ``reference=True`` uses the slow reference capture
        (eager processors on every layer, float32 probabilities, all kept): the baseline.
        Raises :class:`NonFiniteOutputError` naming the model on NaN/inf latents or maps.
        """
        maps, _ = self.unet_pass(images, timestep, noise="per_image" if noise else None, seed=seed,
                                 head_chunk=head_chunk, reference=reference)
        return maps

    def unet_pass(
        self,
        images: torch.Tensor,
        timestep: int = 300,
        *,
        noise: str | None = None,
        seed: int = 0,
        attention: bool = True,
        features: bool = False,
        head_chunk: int | None = None,
        reference: bool = False,
    ) -> tuple[dict[int, torch.Tensor] | None, torch.Tensor | None]:
        """One UNet pass feeding every capture asked for: ``(attention maps or None, features or None)``.

        Args:
            images: (B, 3, H, W) in [-1, 1].
            noise: None (DiffSeg's official pass), ``"per_image"`` (:meth:`add_noise`, seeded per
                image) or ``"shared"`` (DiffCut's: one noise tensor seeded ``seed`` for the batch,
                added by a trailing-spacing DDIM schedule, :func:`diffseg.diffcut.diffcut_noisy_latents`).
            attention: capture the self-attention maps ``{s: (B, s*s, s*s)}`` (as :meth:`attention_maps`).
            features: capture DiffCut's features, the output of the last encoder self-attention layer,
                ``(B, h*w, C)`` float32 (:func:`diffseg.diffcut.capture_diffcut_features`).
        """
        steps = int(self.scheduler.config.num_train_timesteps)
        if not (isinstance(timestep, numbers.Integral) and 0 <= int(timestep) < steps):
            raise ValueError(f"timestep: expected an integer in [0, {steps}) (the scheduler's training steps), "
                             f"got {timestep!r}")
        latents = self.encode(images)
        batch = latents.shape[0]
        timesteps = torch.full((batch,), timestep, dtype=torch.long, device=self.device)
        if noise == "per_image":
            latents = self.add_noise(latents, timestep, seed)
        elif noise == "shared":
            noisy, timesteps = diffcut_noisy_latents(latents, dict(self.scheduler.config), timestep, seed)
            latents = noisy.to(latents.dtype)
        elif noise is not None:
            raise ValueError(f"noise: expected None, 'per_image' or 'shared', got {noise!r}")
        kwargs = self.unet_inputs(batch, tuple(images.shape[-2:]))
        with contextlib.ExitStack() as stack:
            store = feature_store = None
            if attention:
                if reference:
                    capture = capture_self_attention_reference(self.unet)
                else:
                    budget = available_memory(self.device) if head_chunk is None else None
                    capture = capture_self_attention(self.unet, head_chunk=head_chunk, memory_budget=budget)
                store = stack.enter_context(capture)
            if features:
                feature_store = stack.enter_context(capture_diffcut_features(self.unet))
            self.unet(latents, timesteps, **kwargs, return_dict=False)
        maps = store.maps() if store is not None else None
        for side, attention_map in (maps or {}).items():
            if not bool(torch.isfinite(attention_map).all()):
                raise NonFiniteOutputError(
                    f"{self.name}: the {side}x{side} self-attention has NaN/inf values in {self.dtype} "
                    "(a float16 overflow in the UNet?); use model.dtype=float32 (the default) or bfloat16"
                )
        feats = feature_store.features.float() if feature_store is not None else None
        if feats is not None and not bool(torch.isfinite(feats).all()):
            raise NonFiniteOutputError(f"{self.name}: DiffCut's features have NaN/inf values in {self.dtype}")
        return maps, feats


def _check_time_embedding(unet: UNet2DConditionModel, text_encoder_2: CLIPTextModelWithProjection, name: str) -> None:
    """The UNet's added embedding must take 6 time ids and the second encoder's pooled projection."""
    config = unet.config
    expected = config.get("projection_class_embeddings_input_dim")
    given = 6 * int(config.get("addition_time_embed_dim") or 0) + int(text_encoder_2.config.projection_dim)
    if expected != given:
        raise ValueError(
            f"{name}: unet projection_class_embeddings_input_dim={expected} but 6 time ids x "
            f"addition_time_embed_dim={config.get('addition_time_embed_dim')} + text_encoder_2 projection_dim="
            f"{text_encoder_2.config.projection_dim} = {given}; the UNet and text_encoder_2 do not belong together"
        )


def _load_vae(vae: str, model: str, *, dtype: torch.dtype, hub: dict[str, Any]) -> AutoencoderKL:
    """A replacement VAE from a hub id or a folder (its own config.json, or a pipeline folder's vae/)."""
    folder = Path(vae).expanduser()
    subfolder = "vae" if folder.is_dir() and not (folder / "config.json").is_file() and (folder / "vae").is_dir() \
        else None
    try:
        return AutoencoderKL.from_pretrained(vae, subfolder=subfolder, torch_dtype=dtype, use_safetensors=True, **hub)
    except Exception as exc:  # every loader failure becomes one clear error
        raise BackboneLoadError(
            f"cannot load the VAE {vae!r} named for Stable Diffusion model {model!r} "
            f"({type(exc).__name__}: {exc}); pass a hub id or a folder with config.json + safetensors weights"
        ) from exc


def _prepare(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Move to device/dtype, eval mode, no gradients.

    The dtype cast of an unquantised module goes through ``torch.nn.Module.to``: diffusers'
    ``ModelMixin.to`` logs a spurious "should be kept in float32: []" warning on every cast.
    """
    module = module.to(device=device)
    if any(p.is_floating_point() and p.dtype != dtype for p in module.parameters()):
        if getattr(module, "is_quantized", False):
            module = module.to(dtype=dtype)  # diffusers raises its own clear error here
        else:
            module = torch.nn.Module.to(module, dtype=dtype)
    module.eval()
    module.requires_grad_(False)
    return module
