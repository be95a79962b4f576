"""Concept embeddings: prompts -> text-encoder token states -> one row per prompt (or per token).

Encoders, all local (nothing downloads):
- a transformers text model + tokenizer from a folder (a diffusers pipeline folder's `text_encoder/` +
  `tokenizer/`, or a plain transformers folder such as all-MiniLM-L6-v2);
- an ONNX text encoder run with onnxruntime, with a tokenizer from a local folder or, for CLIP, the BPE
  vocabulary shipped inside the installed `open-clip-torch` wheel (read as a file; `import open_clip` fails
  beside the CPU torch here).

Which states: SD 1.x/2.x pipelines feed the UNet the last hidden state (SD 2.x's encoder already ends at the
OpenCLIP penultimate layer); SDXL feeds the penultimate states (`hidden_states[-2]`, no final norm) of `text_encoder`
and `text_encoder_2` concatenated per token (`ConcatTextEncoder`), the refiner those of `text_encoder_2` alone.

Aggregation (how token states become rows of X): "mean" over the prompt's real, non-special tokens (default),
"eot" (the end-of-text / [SEP] token), "last" (the last real word token, UCE's choice) or "all" (every non-padding
token is its own row). Flattening padding and the constant BOS token gives a near full-rank projector. Real tokens
are those of the attention mask, cut after the first end-of-text: CLIP pads with end-of-text and OpenCLIP (SD 2.x,
SDXL's second tokenizer) with "!" (id 0, also a real token in "a cat!"), so neither pad id marks padding.
"""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from edgeml.errors import InputError, MissingDependencyError

DEFAULT_TEMPLATES = ("{}", "a photo of {}", "a painting of {}", "an image of {}", "a picture of {}")
STYLE_TEMPLATES = ("a painting in the style of {}", "art by {}", "an artwork in the style of {}", "{} style")
AGGREGATIONS = ("mean", "eot", "last", "all")
STATES = ("last", "penultimate")
OPEN_CLIP_PAD = "!"


@dataclass
class TokenStates:
    """Encoder output: states [B, L, d] float32, real [B, L] bool (non-padding), special [B, L] bool."""

    states: np.ndarray
    real: np.ndarray
    special: np.ndarray


class TextEncoder(Protocol):
    width: int

    def encode(self, prompts: list[str]) -> TokenStates: ...


def describe_encoder(encoder: TextEncoder) -> list[dict]:
    """Report rows for an encoder: [{component, width, states, pad_token, kind}] (one per concatenated part)."""
    if hasattr(encoder, "describe"):
        return encoder.describe()
    return [{"component": type(encoder).__name__, "width": int(encoder.width), "states": "last", "kind": "custom"}]


def _token_masks(tok, prompts: list[str], max_length: int, pad_to: int | None = None) -> dict:
    """Token ids and masks [B, L]; padded to the longest prompt (aggregations read real tokens only) or to `pad_to`."""
    enc = tok(list(prompts), padding="max_length" if pad_to else "longest", truncation=True,
              max_length=pad_to or max_length, return_special_tokens_mask=True, return_tensors="np")
    ids = enc["input_ids"]
    real = enc["attention_mask"].astype(bool) if "attention_mask" in enc else np.ones_like(ids, bool)
    eos = getattr(tok, "eos_token_id", None)
    if eos is not None and ids.shape[1]:
        # A CLIP prompt ends at its first end-of-text, whatever the pad id (EOT for CLIP, "!" for OpenCLIP): this
        # also holds where a tokenizer returns no attention mask.
        hits = ids == eos
        first = np.where(hits.any(1), hits.argmax(1), ids.shape[1] - 1)
        real &= np.arange(ids.shape[1])[None, :] <= first[:, None]
    special = enc["special_tokens_mask"].astype(bool) & real
    return {"input_ids": ids, "real": real, "special": special, "attention_mask": real.astype(np.int64)}


def token_count(tok, prompts: list[str], max_length: int) -> int:
    """The padded length `_token_masks` gives `prompts` (the longest tokenization, truncated at `max_length`)."""
    ids = tok(list(prompts), padding="longest", truncation=True, max_length=max_length)["input_ids"]
    return max(len(i) for i in ids)


def _max_length(tok, default: int = 77) -> int:
    n = getattr(tok, "model_max_length", default)
    return default if n is None or n > 4096 else int(n)


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """transformers' progress bars off for the block, restored after (process-wide state)."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def _text_model_class(folder: Path, default):
    """The transformers class a text-encoder folder names when it is a CLIP text tower (SDXL's text_encoder_2 is
    CLIPTextModelWithProjection: loading it as AutoModel's CLIPTextModel prints an unexpected-key report), else
    `default`."""
    import json

    try:
        arch = (json.loads((folder / "config.json").read_text()).get("architectures") or [None])[0]
    except (OSError, ValueError, AttributeError):
        return default
    if arch in ("CLIPTextModel", "CLIPTextModelWithProjection"):
        import transformers

        return getattr(transformers, arch)
    return default


def _check_states(states: str) -> str:
    if states not in STATES:
        raise InputError(f"unknown text-encoder states {states!r}", fix=f"use one of {', '.join(STATES)}")
    return states


class TransformersTextEncoder:
    """A transformers text model + tokenizer; last or penultimate hidden states [B, L, d]."""

    def __init__(self, model_dir: str | Path, tokenizer_dir: str | Path | None = None, max_length: int | None = None,
                 *, states: str = "last", component: str = "text_encoder"):
        from transformers import AutoModel, AutoTokenizer

        self.model_dir = Path(model_dir)
        try:
            tokenizer = AutoTokenizer.from_pretrained(Path(tokenizer_dir or model_dir), local_files_only=True)
            with _quiet_progress():  # its progress bar on stderr would break the CLI's one-line error contract
                # use_safetensors: a pickled pytorch_model.bin is refused, never unpickled.
                model = _text_model_class(self.model_dir, AutoModel).from_pretrained(
                    self.model_dir, local_files_only=True, use_safetensors=True).eval()
        except (OSError, ValueError, KeyError) as e:  # transformers' errors for a broken or foreign folder
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(f"cannot load the text encoder or its tokenizer: {first}", path=self.model_dir,
                             fix="pass --text-encoder / --tokenizer folders saved by transformers (safetensors)"
                             ) from None
        self._setup(model, tokenizer, max_length, states, component)

    @classmethod
    def from_model(cls, model, tokenizer, *, states: str = "last", component: str = "text_encoder",
                   max_length: int | None = None) -> TransformersTextEncoder:
        """Wrap a text model already in memory (e.g. converted from a single-file checkpoint)."""
        self = cls.__new__(cls)
        self.model_dir = None
        self._setup(model.eval(), tokenizer, max_length, states, component)
        return self

    def _setup(self, model, tokenizer, max_length: int | None, states: str, component: str) -> None:
        self.tokenizer = tokenizer
        self.model = getattr(model, "text_model", model)  # CLIPModel / CLIPTextModel(WithProjection): the tower
        self.width = int(self.model.config.hidden_size)
        positions = getattr(self.model.config, "max_position_embeddings", None) or 4096
        self.max_length = max_length or min(_max_length(self.tokenizer), positions)
        self.states, self.component = _check_states(states), component

    def describe(self) -> list[dict]:
        source = str(self.model_dir) if self.model_dir else getattr(self, "source", None)
        return [{"component": self.component, "width": self.width, "states": self.states,
                 "pad_token": self.tokenizer.pad_token, "kind": getattr(self.model.config, "model_type", "custom"),
                 "hidden_act": getattr(self.model.config, "hidden_act", None), "source": source}]

    def token_count(self, prompts: list[str]) -> int:
        return token_count(self.tokenizer, prompts, self.max_length)

    def encode(self, prompts: list[str], length: int | None = None) -> TokenStates:
        """prompts -> TokenStates [B, L, d]; L = the longest prompt's tokens, or `length` (a concatenation's)."""
        import torch

        t = _token_masks(self.tokenizer, prompts, self.max_length, pad_to=length)
        penultimate = self.states == "penultimate"
        with torch.no_grad():
            out = self.model(input_ids=torch.from_numpy(t["input_ids"]),
                             attention_mask=torch.from_numpy(t["attention_mask"]), output_hidden_states=penultimate)
        states = out.hidden_states[-2] if penultimate else out.last_hidden_state
        return TokenStates(states.float().numpy(), t["real"], t["special"])


class ConcatTextEncoder:
    """Several encoders' states concatenated per token, as SDXL builds `prompt_embeds`: [B, L, Σ d_i].

    Every part tokenizes the prompts to the same length L (the longest over all tokenizers, as the pipeline pads
    both to 77); real/special masks are the first part's.
    """

    def __init__(self, parts: list[TextEncoder]):
        if not parts:
            raise InputError("no text encoder to concatenate")
        self.parts = list(parts)
        self.width = sum(int(p.width) for p in self.parts)

    def describe(self) -> list[dict]:
        return [row for p in self.parts for row in describe_encoder(p)]

    def encode(self, prompts: list[str]) -> TokenStates:
        length = max(p.token_count(prompts) for p in self.parts)
        outs = [p.encode(prompts, length=length) for p in self.parts]
        return TokenStates(np.concatenate([o.states for o in outs], axis=-1), outs[0].real, outs[0].special)


class OnnxTextEncoder:
    """An ONNX text encoder (input_ids [B, L] -> last_hidden_state, or the penultimate of its `hidden_states.N`
    outputs, [B, L, d]) run with onnxruntime."""

    def __init__(self, onnx_path: str | Path, tokenizer, max_length: int | None = None, *, states: str = "last",
                 component: str = "text_encoder"):
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingDependencyError("onnxruntime", purpose="ONNX text encoders") from None
        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise InputError("ONNX text encoder not found", path=self.path)
        try:
            self.session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail / InvalidProtobuf / InvalidGraph types
            raise InputError(f"onnxruntime cannot load the text encoder ({type(e).__name__})", path=self.path,
                             fix="pass an ONNX text encoder (input_ids -> last_hidden_state)") from None
        self.tokenizer = tokenizer
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        out = self.session.get_outputs()
        names = [o.name for o in out]
        self.states, self.component = _check_states(states), component
        if self.states == "penultimate":
            hidden = sorted((int(n.rsplit(".", 1)[1]), n) for n in names
                            if n.startswith("hidden_states.") and n.rsplit(".", 1)[1].isdigit())
            if len(hidden) < 2:
                raise InputError("the ONNX text encoder has no hidden_states.N outputs; this model family reads the "
                                 "penultimate layer", path=self.path,
                                 fix="export the text encoder with output_hidden_states=True (optimum does for SDXL)")
            self.output = hidden[-2][1]
        else:
            self.output = "last_hidden_state" if "last_hidden_state" in names else names[0]
        self.width = int(out[names.index(self.output)].shape[-1])
        shape = self.inputs.get("input_ids").shape if "input_ids" in self.inputs else [None, None]
        fixed = shape[1] if isinstance(shape[1], int) else None
        self.fixed_length = fixed
        self.max_length = max_length or fixed or _max_length(tokenizer)

    def describe(self) -> list[dict]:
        return [{"component": self.component, "width": self.width, "states": self.states,
                 "pad_token": self.tokenizer.pad_token, "kind": "onnx"}]

    def token_count(self, prompts: list[str]) -> int:
        return self.fixed_length or token_count(self.tokenizer, prompts, self.max_length)

    def encode(self, prompts: list[str], length: int | None = None) -> TokenStates:
        t = _token_masks(self.tokenizer, prompts, self.max_length, pad_to=self.fixed_length or length)
        feeds = {}
        for name, info in self.inputs.items():
            src = t["input_ids"] if "ids" in name else t["attention_mask"] if "mask" in name else None
            if src is None:
                raise InputError(f"ONNX text encoder input {name!r} is neither token ids nor an attention mask",
                                 path=self.path)
            feeds[name] = src.astype(np.int32 if "int32" in info.type else np.int64)
        (states,) = self.session.run([self.output], feeds)
        return TokenStates(np.asarray(states, np.float32), t["real"], t["special"])


def clip_bpe_vocab_path() -> Path | None:
    """The CLIP BPE vocabulary file shipped in the installed open-clip-torch wheel, found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    for root in (spec.submodule_search_locations or []) if spec else []:
        p = Path(root) / "bpe_simple_vocab_16e6.txt.gz"
        if p.is_file():
            return p
    return None


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


@lru_cache(maxsize=2)
def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """A transformers CLIPTokenizer built from open_clip's BPE vocabulary (same ids as openai/clip-vit-large);
    `pad_token="!"` gives OpenCLIP's padding (SD 2.x, SDXL's second tokenizer)."""
    from transformers import CLIPTokenizer

    path = clip_bpe_vocab_path()
    if path is None:
        raise MissingDependencyError("open-clip-torch", purpose="the CLIP BPE vocabulary (or pass --tokenizer DIR)")
    with gzip.open(path) as f:
        merges = f.read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    pairs = [tuple(m.split()) for m in merges]
    chars = list(_bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["".join(p) for p in pairs] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=pairs, model_max_length=77,
                         pad_token=pad_token)


def _load_component(p: Path, tokenizer: str | Path | None, *, states: str, component: str) -> TextEncoder:
    """One encoder: a transformers folder or an `.onnx` file / ONNX folder (tokenizer from `tokenizer`, a sibling
    `tokenizer/` folder, or the CLIP BPE vocabulary)."""
    if tokenizer is None and (p.parent / "tokenizer").is_dir() and p.parent != p:
        tokenizer = p.parent / "tokenizer"
    onnx_file = p if p.suffix == ".onnx" else (p / "model.onnx" if (p / "model.onnx").is_file() else None)
    if onnx_file is not None:
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(tokenizer, local_files_only=True) if tokenizer else clip_tokenizer()
        except (OSError, ValueError, KeyError) as e:
            raise InputError(f"cannot load the tokenizer ({type(e).__name__})", path=tokenizer,
                             fix="pass --tokenizer with a folder saved by transformers") from None
        return OnnxTextEncoder(onnx_file, tok, states=states, component=component)
    if not (p / "config.json").is_file():
        raise InputError("no text encoder here (no config.json, text_encoder/ or model.onnx)", path=p,
                         fix="pass --text-encoder with a transformers/diffusers folder or an ONNX text encoder")
    return TransformersTextEncoder(p, tokenizer, states=states, component=component)


def load_text_encoder(path: str | Path, tokenizer: str | Path | None = None) -> TextEncoder:
    """A text encoder from a local path: a diffusers pipeline folder, a transformers folder, or `.onnx` file / ONNX
    folder.

    A pipeline folder gives what its pipeline feeds the UNet: `text_encoder/` alone (SD 1.x / 2.x: last hidden
    state), `text_encoder/` + `text_encoder_2/` (SDXL: penultimate states concatenated per token, tokenizers from
    `tokenizer/` and `tokenizer_2/`), or `text_encoder_2/` alone (SDXL refiner: its penultimate states).
    """
    p = Path(path)
    if not p.exists():
        raise InputError("text encoder not found", path=p, fix="pass a local folder or .onnx file")
    if p.is_dir() and (p / "text_encoder_2").is_dir():
        names = [n for n in ("text_encoder", "text_encoder_2") if (p / n).is_dir()]
        if tokenizer is not None and len(names) > 1:
            raise InputError("--tokenizer names one tokenizer, this SDXL pipeline has two", path=p,
                             fix="leave --tokenizer out: tokenizer/ and tokenizer_2/ are read from the pipeline")
        parts = []
        for name in names:
            tok_dir = p / name.replace("text_encoder", "tokenizer")
            parts.append(_load_component(p / name, tokenizer or (tok_dir if tok_dir.is_dir() else None),
                                         states="penultimate", component=name))
        return ConcatTextEncoder(parts) if len(parts) > 1 else parts[0]
    if p.is_dir() and (p / "text_encoder").is_dir():
        tokenizer = tokenizer or (p / "tokenizer" if (p / "tokenizer").is_dir() else None)
        return _load_component(p / "text_encoder", tokenizer, states="last", component="text_encoder")
    return _load_component(p, tokenizer, states="last", component=p.stem if p.suffix == ".onnx" else p.name)


def aggregate(tokens: TokenStates, mode: str = "mean") -> np.ndarray:
    """TokenStates -> rows [n, d] float64: one per prompt ("mean", "eot", "last") or per real token ("all")."""
    if mode not in AGGREGATIONS:
        raise InputError(f"unknown aggregation {mode!r}", fix=f"use one of {', '.join(AGGREGATIONS)}")
    states = tokens.states.astype(np.float64)
    words = tokens.real & ~tokens.special
    rows = []
    for b in range(states.shape[0]):
        real_idx = np.flatnonzero(tokens.real[b])
        word_idx = np.flatnonzero(words[b])
        if mode == "all":
            rows.extend(states[b, real_idx])
        elif mode == "mean":
            rows.append(states[b, word_idx if len(word_idx) else real_idx].mean(0))
        elif mode == "eot":
            rows.append(states[b, real_idx[-1]])
        else:  # "last": the last word token; the empty prompt falls back to its last real (special) token
            rows.append(states[b, word_idx[-1] if len(word_idx) else real_idx[-1]])
    return np.stack(rows)


def check_template(template: str) -> str:
    """A prompt template holds `{}` for the concept (or no braces pair: the concept is appended) and nothing
    `str.format` would choke on; -> the template."""
    if not template.strip():
        raise InputError("empty prompt template", fix='use e.g. --template "a photo of {}"')
    if "{}" in template:
        try:
            template.format("concept")
        except (IndexError, KeyError, ValueError):
            raise InputError(f"prompt template {template!r} may hold only `{{}}` between braces",
                             fix='use e.g. --template "a photo of {}"') from None
    return template


def expand_prompts(concepts: list[str], templates: tuple[str, ...] | list[str] = DEFAULT_TEMPLATES) -> list[str]:
    """Each concept through each template: ["van gogh"] × ("a photo of {}",) -> ["a photo of van gogh"]."""
    templates = [check_template(t) for t in templates]
    return [t.format(c) if "{}" in t else f"{t} {c}" for c in concepts for t in templates]


def concept_embeddings(encoder: TextEncoder, concepts: list[str], *, templates=DEFAULT_TEMPLATES,
                       aggregation: str = "mean", batch: int = 32) -> np.ndarray:
    """Concepts -> embedding rows [n, d] float64 (n = #concepts × #templates, or #tokens for "all")."""
    concepts = [c for c in concepts if c is not None]
    if not concepts or any(not str(c).strip() for c in concepts):
        raise InputError("empty concept list or empty concept string",
                         fix='give at least one non-empty concept, e.g. --forget "van gogh"')
    prompts = expand_prompts(concepts, tuple(templates) or ("{}",))
    parts = [aggregate(encoder.encode(prompts[i:i + batch]), aggregation) for i in range(0, len(prompts), batch)]
    return np.concatenate(parts)


def prompt_embeddings(encoder: TextEncoder, prompts: list[str], aggregation: str = "mean") -> np.ndarray:
    """Literal prompts (no templates; "" allowed, e.g. UCE's guide) -> rows [n, d] float64."""
    return aggregate(encoder.encode(list(prompts)), aggregation)
