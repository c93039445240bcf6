"""MM-DiT backbone (SD3, SD3.5, Flux): image -> latent -> one transformer pass -> joint-attention maps.

:class:`MMDiTBackbone` runs Seg4Diff's input recipe as its release (cvlab-kaist/Seg4Diff,
``Seg4DiffUnsup.forward`` + ``SD3Backbone``) runs it:

* pixels / 255, zero padding at the bottom/right to a multiple of ``pad_multiple`` = 32 (detectron2's
  ``ImageList.from_tensors`` with the model's ``SIZE_DIVISIBILITY``), the whole padded image resized
  bilinearly (``align_corners=False``, no antialiasing, no crop) to ``input_size`` = 1024, then ``2x - 1``;
* the VAE latent *mean*, ``(mean - shift_factor) * scaling_factor``;
* the empty prompt encoded by the pipeline's own CLIP encoders with T5 off: SD3/SD3.5 use the
  pipeline's ``encode_prompt`` with ``text_encoder_3=None`` (zeros in T5's place; 77 CLIP + 77 zero
  tokens = 154 with ``max_sequence_length=77``, pooled = both CLIP projections); Flux gets CLIP's
  pooled embedding and 77 zero tokens in T5's place (``txt_ids`` zeros);
* flow-matching noise at the release's timestep: the ``step_from_end``-th (8th) from last of a
  ``steps`` (28) step schedule of the pipeline's scheduler (its config's ``shift``; Flux: dynamic
  shift ``mu`` for the real image token count), ``x_t = (1 - sigma) x_0 + sigma * noise``. With SD3's
  and SD3.5's config (shift 3.0) that is timestep 515.07, sigma = 0.51507. The noise is seeded per
  image from ``seed`` (default 0): the release draws unseeded noise (``randn_tensor`` without a
  generator; ``SEED: None``), so its runs are not reproducible; ours are and record the seed.

Loading: a hub id or a local diffusers folder (``revision`` recorded in :attr:`MMDiTBackbone.revision`),
or one ``.safetensors`` file of the transformer with ``config=`` naming the diffusers folder / hub id of the
same model (its VAE, CLIP encoders and scheduler; ``revision`` is then the config's);
float16 or bfloat16 (or float32). T5 is never loaded. Offline without the weights fails at once with
one :class:`~diffseg.backbone.BackboneLoadError` naming the model and revision.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from diffseg.backbone import BackboneLoadError
from diffseg.devices import resolve_device, resolve_dtype
from diffseg.families import MMDiTFamily, detect_mmdit_family
from diffseg.joint_attention import DEFAULT_QUERY_CHUNK, JointAttentionStore, capture_joint_attention

__all__ = ["MMDIT_PIPELINES", "MMDiTBackbone", "flow_matching_sigma"]

MMDIT_PIPELINES = ("StableDiffusion3Pipeline", "FluxPipeline")
_T5_TOKENS = 77  # the release's max_sequence_length


def _env_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def flow_matching_sigma(scheduler: Any, steps: int = 28, step_from_end: int = 8,
                        image_tokens: int = 4096) -> tuple[float, float]:
    """(timestep, sigma) of the ``step_from_end``-th from last step of a ``steps``-step schedule.

    ``scheduler``: a ``FlowMatchEulerDiscreteScheduler`` (its config's shift; with
    ``use_dynamic_shifting`` the Flux pipeline's ``mu`` for ``image_tokens`` and its sigma grid).
    """
    if not 1 <= step_from_end <= steps:
        raise ValueError(f"step_from_end: expected 1..{steps}, got {step_from_end}")
    config = scheduler.config
    if config.get("use_dynamic_shifting"):
        base, top = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
        slope = (config.get("max_shift", 1.15) - config.get("base_shift", 0.5)) / (top - base)
        mu = image_tokens * slope + config.get("base_shift", 0.5) - slope * base
        scheduler.set_timesteps(steps, sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    else:
        scheduler.set_timesteps(steps)
    index = steps - step_from_end
    return float(scheduler.timesteps[index]), float(scheduler.sigmas[index])


class MMDiTBackbone:
    """VAE + MM-DiT transformer + CLIP encoders of an SD3 / SD3.5 / Flux pipeline, for one seeded pass.

    Attributes: ``pipe`` (the diffusers pipeline, T5 absent), ``family``
    (:class:`~diffseg.families.MMDiTFamily`, from the transformer config), ``name``, ``revision``,
    ``timestep`` / ``sigma`` (the release's step), ``seed``, ``input_size``, ``device``, ``dtype``;
    ``pretrained`` is True only when the weights came from :meth:`from_pretrained`.
    """

    pretrained = False

    def __init__(self, pipe: Any, *, name: str = "custom", revision: str | None = None,
                 dtype: torch.dtype | str | None = "float16", device: torch.device | str | None = None,
                 input_size: int = 1024, pad_multiple: int = 32, steps: int = 28, step_from_end: int = 8,
                 seed: int = 0) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.family: MMDiTFamily = detect_mmdit_family(pipe.transformer.config)
        self.pipe = pipe.to(self.device, self.dtype)
        for module in (pipe.transformer, pipe.vae, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
            if module is not None:
                module.eval().requires_grad_(False)
        self.name, self.revision = name, revision
        self.input_size, self.pad_multiple, self.seed = int(input_size), int(pad_multiple), int(seed)
        self.steps, self.step_from_end = int(steps), int(step_from_end)
        self.timestep, self.sigma = flow_matching_sigma(pipe.scheduler, self.steps, self.step_from_end,
                                                        self.image_tokens)
        self._prompt: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def is_flux(self) -> bool:
        return self.family.name.startswith("flux")

    @property
    def latent_side(self) -> int:
        return self.input_size // self.pipe.vae_scale_factor

    @property
    def image_tokens(self) -> int:
        """Image tokens of one pass: (latent side / 2) ** 2 (SD3's 2x2 patches, Flux's 2x2 packing)."""
        return (self.latent_side // 2) ** 2

    # ----------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, model: str, *, revision: str | None = None, config: str | None = None,
                        dtype: torch.dtype | str = "float16", device: torch.device | str | None = None,
                        local_files_only: bool | None = None, cache_dir: str | None = None,
                        **kwargs: Any) -> MMDiTBackbone:
        """Load a hub id / local diffusers folder (or one ``.safetensors`` file with ``config=``) without T5.

        A single file holds the transformer (the original release's key names, e.g. FLUX.1's
        ``flux1-dev.safetensors``, or diffusers'); everything else comes from ``config`` (a diffusers folder
        or hub id of the same model, at ``revision``).

        Raises :class:`~diffseg.backbone.BackboneLoadError` (one message naming ``model`` and
        ``revision``) when the weights cannot be found: offline and not in the cache, no such
        repository or revision, no safetensors. Other keyword arguments go to :class:`MMDiTBackbone`.
        """
        from diffusers import (
            DiffusionPipeline,
            FluxPipeline,
            FluxTransformer2DModel,
            SD3Transformer2DModel,
            StableDiffusion3Pipeline,
        )

        offline = _env_offline() if local_files_only is None else bool(local_files_only)
        torch_dtype = resolve_dtype(dtype)
        what = f"MM-DiT model {model!r}" + (f" (revision {revision!r})" if revision else "")
        single = model.endswith(".safetensors")
        try:
            index = DiffusionPipeline.load_config(config if single else model, revision=revision,
                                                  local_files_only=offline, cache_dir=cache_dir)
        except Exception as exc:  # every hub failure becomes one clear error
            reason = ("its weights are not in the local Hugging Face cache and offline mode is on (HF_HUB_OFFLINE / "
                      "local_files_only); download them once online or pass a local diffusers folder"
                      if offline else f"{type(exc).__name__}: {exc}")
            if single and config is None:
                reason = "a single .safetensors file needs config=<diffusers folder or hub id of the same model>"
            raise BackboneLoadError(f"cannot load {what}: {reason}") from None
        pipeline_name = index.get("_class_name")
        if pipeline_name not in MMDIT_PIPELINES:
            raise BackboneLoadError(f"cannot load {what}: its pipeline is {pipeline_name!r}, not one of "
                                    f"{MMDIT_PIPELINES}")
        pipeline_class = StableDiffusion3Pipeline if pipeline_name == "StableDiffusion3Pipeline" else FluxPipeline
        no_t5 = ({"text_encoder_3": None, "tokenizer_3": None} if pipeline_class is StableDiffusion3Pipeline
                 else {"text_encoder_2": None, "tokenizer_2": None})
        try:
            if single:
                # the file holds the transformer (original or diffusers key names); the VAE, CLIP encoders,
                # tokenizers and scheduler come from `config`. diffusers' pipeline-level from_single_file
                # would read them from the file too, and refuses a file without them (FLUX.1's files).
                if not Path(model).is_file():
                    raise FileNotFoundError(model)
                transformer_class = (SD3Transformer2DModel if pipeline_class is StableDiffusion3Pipeline
                                     else FluxTransformer2DModel)
                transformer = transformer_class.from_single_file(model, config=config, subfolder="transformer",
                                                                 config_revision=revision, torch_dtype=torch_dtype,
                                                                 local_files_only=offline, cache_dir=cache_dir)
                pipe = pipeline_class.from_pretrained(config, transformer=transformer, revision=revision,
                                                      torch_dtype=torch_dtype, use_safetensors=True,
                                                      local_files_only=offline, cache_dir=cache_dir, **no_t5)
            else:
                pipe = pipeline_class.from_pretrained(model, revision=revision, torch_dtype=torch_dtype,
                                                      use_safetensors=True, local_files_only=offline,
                                                      cache_dir=cache_dir, **no_t5)
        except Exception as exc:  # every loader failure becomes one clear error
            raise BackboneLoadError(f"cannot load {what}: {type(exc).__name__}: {exc}") from None
        backbone = cls(pipe, name=model, revision=revision, dtype=torch_dtype, device=device, **kwargs)
        backbone.pretrained = True
        return backbone

    # ----------------------------------------------------------------------------------------- inputs
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8-range images (B, 3, H, W) -> (B, 3, input_size, input_size) float32 in [-1, 1] (module docstring)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W) with values 0..255, got {tuple(images.shape)}")
        x = images.float() / 255.0
        if self.pad_multiple > 1:
            height, width = x.shape[-2:]
            pad_h = -height % self.pad_multiple
            pad_w = -width % self.pad_multiple
            x = F.pad(x, (0, pad_w, 0, pad_h), value=0.0)
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return 2.0 * x - 1.0

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) in [-1, 1] -> latents (B, C, S/8, S/8): (VAE mean - shift) * scale."""
        vae = self.pipe.vae
        mean = vae.encode(images.to(self.device, vae.dtype)).latent_dist.mean
        shift = vae.config.get("shift_factor") or 0.0
        return ((mean - shift) * vae.config.scaling_factor).to(self.dtype)

    @torch.no_grad()
    def empty_prompt(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(context (1, T, joint_attention_dim), pooled (1, P)) of "" with T5 off; T = 154 (SD3) or 77 (Flux)."""
        if self._prompt is None:
            pipe = self.pipe
            if self.is_flux:
                pooled = pipe._get_clip_prompt_embeds("", device=self.device)
                context = torch.zeros(1, _T5_TOKENS, pipe.transformer.config.joint_attention_dim,
                                      device=self.device, dtype=self.dtype)
            else:
                context, _, pooled, _ = pipe.encode_prompt(prompt="", prompt_2=None, prompt_3=None,
                                                           device=self.device, do_classifier_free_guidance=False,
                                                           max_sequence_length=_T5_TOKENS)
            self._prompt = (context.to(self.dtype), pooled.to(self.dtype))
        return self._prompt

    def noise(self, latents: torch.Tensor) -> torch.Tensor:
        """Seeded standard normal noise like ``latents``: each image from its own CPU generator seeded ``seed``."""
        draws = [torch.randn(latents.shape[1:], generator=torch.Generator().manual_seed(self.seed))
                 for _ in range(latents.shape[0])]
        return torch.stack(draws).to(latents.device, latents.dtype)

    def transformer_inputs(self, latents: torch.Tensor) -> dict[str, Any]:
        """Keyword arguments of the transformer pass at the release's step for latents (B, C, h, w)."""
        batch, channels, height, width = latents.shape
        noisy = (1.0 - self.sigma) * latents.float() + self.sigma * self.noise(latents).float()
        noisy = noisy.to(self.dtype)
        context, pooled = self.empty_prompt()
        kwargs: dict[str, Any] = {"encoder_hidden_states": context.expand(batch, -1, -1),
                                  "pooled_projections": pooled.expand(batch, -1), "return_dict": False}
        timestep = torch.full((batch,), self.timestep, device=self.device, dtype=self.dtype)
        if not self.is_flux:
            return {**kwargs, "hidden_states": noisy, "timestep": timestep}
        pipe = self.pipe
        packed = pipe._pack_latents(noisy, batch, channels, height, width)
        image_ids = pipe._prepare_latent_image_ids(batch, height // 2, width // 2, self.device, self.dtype)
        kwargs.update(hidden_states=packed, timestep=timestep / 1000.0, img_ids=image_ids,
                      txt_ids=torch.zeros(context.shape[1], 3, device=self.device, dtype=self.dtype))
        if pipe.transformer.config.guidance_embeds:
            kwargs["guidance"] = torch.full((batch,), 3.5, device=self.device, dtype=torch.float32)
        return kwargs

    @torch.no_grad()
    def joint_attention(self, images: torch.Tensor, layers: Iterable[int | str] | None = (9,),
                        query_chunk: int | None = DEFAULT_QUERY_CHUNK) -> JointAttentionStore:
        """uint8-range images (B, 3, H, W) -> the store of one pass (``image_to_image()`` / ``image_to_text()``)."""
        latents = self.encode(self.preprocess(images))
        inputs = self.transformer_inputs(latents)
        with capture_joint_attention(self.pipe.transformer, layers, query_chunk) as store:
            self.pipe.transformer(**inputs)
        for name, maps in store.image_to_text().items():
            if not bool(torch.isfinite(maps).all()):
                raise ValueError(f"{self.name}: the joint attention of {name} has NaN/inf values in {self.dtype}")
        return store
