"""Stable Diffusion backbone: image -> latent -> one UNet pass -> self-attention maps (DiffSeg steps 2-4).

:class:`StableDiffusionBackbone` holds the VAE, UNet, text encoder and tokenizer of a Stable
Diffusion 1.x/2.x checkpoint (safetensors only) and computes, for a batch of images in [-1, 1],
the per-resolution self-attention maps {s: (B, s*s, s*s) float32} of one UNet pass at t = 300
conditioned on the empty prompt, as the official DiffSeg code does (latent mean, no noise).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from diffusers.utils import is_accelerate_available
from huggingface_hub.errors import (
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from transformers import CLIPTextModel, CLIPTokenizer

from diffseg.capture import capture_self_attention, capture_self_attention_reference
from diffseg.devices import resolve_device, resolve_dtype

__all__ = ["DEFAULT_MODEL_ID", "SD_SCHEDULER_CONFIG", "BackboneLoadError", "StableDiffusionBackbone"]

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "CompVis/stable-diffusion-v1-4"

# Training noise schedule of SD 1.x and 2.x (DDPMScheduler arguments matching their ``scheduler/``
# configs); only used by noise=True.
SD_SCHEDULER_CONFIG: dict = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "steps_offset": 1,
}

_WEIGHT_FOLDERS = ("vae", "unet", "text_encoder")
_OFFLINE_HINT = (
    "no network / not in cache; set HF_HUB_OFFLINE=1 with a local copy in the Hugging Face cache, "
    "or pass a local path to a diffusers-format folder"
)


class BackboneLoadError(RuntimeError):
    """A Stable Diffusion checkpoint could not be loaded (not found, not fetchable, or no safetensors)."""


def _env_offline() -> bool:
    """HF_HUB_OFFLINE read at call time (huggingface_hub reads it only once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _looks_like_path(model_id: str) -> bool:
    """True for ids that can only be filesystem paths (a hub id is ``name`` or ``owner/name``)."""
    return model_id.startswith(("/", ".", "~")) or "\\" in model_id or model_id.count("/") > 1


def _check_local_folder(root: Path, model_id: str, variant: str | None) -> None:
    """Raise BackboneLoadError unless ``root`` has safetensors weights for vae/unet/text_encoder + a tokenizer."""
    pattern = f"*.{variant}*.safetensors" if variant else "*.safetensors"  # also matches sharded files
    for folder in (*_WEIGHT_FOLDERS, "tokenizer"):
        if not (root / folder).is_dir():
            raise BackboneLoadError(
                f"cannot load Stable Diffusion model {model_id!r}: the local folder has no {folder}/ "
                "subfolder (expected a diffusers-format folder: vae/, unet/, text_encoder/, tokenizer/)"
            )
    for folder in _WEIGHT_FOLDERS:
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


def _load_error(model_id: str, component: str, exc: BaseException, *, offline: bool, local: bool) -> BackboneLoadError:
    """Translate a hub/loader exception into one clear BackboneLoadError naming the model id."""
    chain = _chain(exc)
    if local:
        return BackboneLoadError(
            f"cannot load Stable Diffusion model {model_id!r}: loading {component}/ from the local folder "
            f"failed ({type(exc).__name__}: {exc})"
        )
    what = f"cannot load Stable Diffusion model {model_id!r}: could not fetch {component}/"
    if any(isinstance(e, LocalEntryNotFoundError) for e in chain) or offline:
        reason = _OFFLINE_HINT + (" (offline mode is on: HF_HUB_OFFLINE or local_files_only)" if offline else "")
    elif any(isinstance(e, RepositoryNotFoundError) for e in chain):
        reason = "no such model repository on the Hugging Face hub (or it is private/gated: log in first)"
    elif any(isinstance(e, RevisionNotFoundError) for e in chain):
        reason = "the requested revision does not exist"
    elif any(isinstance(e, RemoteEntryNotFoundError) for e in chain) and "safetensors" in str(exc):
        reason = (
            "the repository has no safetensors weights for it; this harness loads safetensors only "
            "(never pickled checkpoints)"
        )
    else:
        reason = _OFFLINE_HINT
    return BackboneLoadError(f"{what} ({reason}). Original error: {type(exc).__name__}: {exc}")


class StableDiffusionBackbone:
    """VAE + UNet (+ text encoder/tokenizer for the empty prompt) of a Stable Diffusion checkpoint.

    Attributes: ``vae``, ``unet``, ``text_encoder``, ``tokenizer``, ``scheduler`` (noise schedule for
    ``noise=True``), ``name`` (model id), ``device``, ``dtype``. All modules are in eval mode on
    ``device`` in ``dtype``. Not thread-safe (the UNet's processors are swapped during a pass).
    """

    def __init__(
        self,
        vae: AutoencoderKL,
        unet: UNet2DConditionModel,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        scheduler: DDPMScheduler | None = None,
        name: str = "custom",
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.vae = _prepare(vae, self.device, self.dtype)
        self.unet = _prepare(unet, self.device, self.dtype)
        self.text_encoder = _prepare(text_encoder, self.device, self.dtype)
        self.tokenizer = tokenizer
        self.scheduler = scheduler if scheduler is not None else DDPMScheduler(**SD_SCHEDULER_CONFIG)
        self.name = name
        # True only for weights loaded from a checkpoint (from_pretrained); results of a backbone
        # built from components (random or hand-made weights) are labelled as such by the harness.
        self.pretrained = False
        self._empty_context: torch.Tensor | None = None

    # ------------------------------------------------------------------------------------ construction
    @classmethod
    def from_components(
        cls,
        vae: AutoencoderKL,
        unet: UNet2DConditionModel,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        *,
        scheduler: DDPMScheduler | None = None,
        name: str = "custom",
    ) -> StableDiffusionBackbone:
        """Wrap already-built modules (moved to ``device``/``dtype``; defaults as in from_pretrained)."""
        return cls(vae, unet, text_encoder, tokenizer, dtype=dtype, device=device, scheduler=scheduler, name=name)

    @classmethod
    def from_pretrained(
        cls,
        model_id: str | os.PathLike = DEFAULT_MODEL_ID,
        *,
        revision: str | None = None,
        variant: str | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        local_files_only: bool = False,
        cache_dir: str | os.PathLike | None = None,
    ) -> StableDiffusionBackbone:
        """Load an SD 1.x/2.x checkpoint (hub id or local diffusers folder), safetensors weights only.

        dtype defaults to float32 (TF32 off), device to CUDA when available (:mod:`diffseg.devices`).
        HF_HUB_OFFLINE=1 (read at call time) implies ``local_files_only``. Any failure raises
        :class:`BackboneLoadError` naming ``model_id`` and what could not be fetched.
        """
        name = str(model_id)
        device = resolve_device(device)
        dtype = resolve_dtype(dtype)
        offline = local_files_only or _env_offline()
        local = Path(name).expanduser()
        is_local = local.is_dir()
        if is_local:
            _check_local_folder(local, name, variant)
            source = str(local)
        elif local.exists():
            raise BackboneLoadError(f"cannot load Stable Diffusion model {name!r}: it is a file, not a folder")
        elif _looks_like_path(name):
            raise BackboneLoadError(
                f"cannot load Stable Diffusion model {name!r}: no such local folder (and not a hub id)"
            )
        else:
            source = name
        hub = {"revision": revision, "local_files_only": offline, "cache_dir": cache_dir}
        weights = {**hub, "variant": variant, "use_safetensors": True}

        def load(component: str, loader, **kwargs):
            try:
                return loader(source, subfolder=component, **kwargs)
            except Exception as exc:  # every loader failure becomes one clear error
                raise _load_error(name, component, exc, offline=offline, local=is_local) from exc

        # low_cpu_mem_usage needs accelerate; asking for it without accelerate only logs a warning
        diffusers_kwargs = {**weights, "torch_dtype": dtype, "low_cpu_mem_usage": is_accelerate_available()}
        vae = load("vae", AutoencoderKL.from_pretrained, **diffusers_kwargs)
        unet = load("unet", UNet2DConditionModel.from_pretrained, **diffusers_kwargs)
        text_encoder = load("text_encoder", CLIPTextModel.from_pretrained, **weights)
        tokenizer = load("tokenizer", CLIPTokenizer.from_pretrained, **hub)
        try:
            scheduler = DDPMScheduler.from_pretrained(source, subfolder="scheduler", **hub)
        except Exception as exc:  # the schedule only matters for noise=True
            logger.warning("%s: no scheduler config (%s); using SD's default noise schedule", name, exc)
            scheduler = None
        backbone = cls(vae, unet, text_encoder, tokenizer, dtype=dtype, device=device, scheduler=scheduler, name=name)
        backbone.pretrained = True
        return backbone

    # ------------------------------------------------------------------------------------------- compute
    @property
    def empty_context(self) -> torch.Tensor:
        """Text-encoder embedding of the empty prompt "", shape (1, 77, dim), computed once and cached."""
        if self._empty_context is None:
            tokens = self.tokenizer(
                "",
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            )
            # a normal tensor (not an inference tensor) even when first needed inside inference_mode
            with torch.inference_mode(False), torch.no_grad():
                hidden = self.text_encoder(tokens.input_ids.to(self.device))[0]
            self._empty_context = hidden.to(self.dtype)
        return self._empty_context

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] -> latents (B, 4, H/8, W/8) = VAE latent mean * scaling factor.

        No sampling (the mean of the latent distribution, as the official DiffSeg code). Model dtype.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        x = images.to(device=self.device, dtype=self.dtype)
        mean = self.vae.encode(x).latent_dist.mean
        return mean * self.vae.config.scaling_factor

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
        official code), run one UNet pass at ``timestep`` with the empty-prompt context and return the
        head- and layer-averaged self-attention per resolution (512 px on SD 1.x -> s = 64, 32, 16, 8).
        ``head_chunk`` bounds memory of the fast capture. ``reference=True`` uses the slow reference
        capture (eager processors on every layer, float32 probabilities, all kept): the baseline.
        """
        latents = self.encode(images)
        if noise:
            latents = self.add_noise(latents, timestep, seed)
        batch = latents.shape[0]
        context = self.empty_context.expand(batch, -1, -1)
        timesteps = torch.full((batch,), timestep, dtype=torch.long, device=self.device)
        if reference:
            capture = capture_self_attention_reference(self.unet)
        else:
            capture = capture_self_attention(self.unet, head_chunk=head_chunk)
        with capture as store:
            self.unet(latents, timesteps, encoder_hidden_states=context, return_dict=False)
        return store.maps()


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
