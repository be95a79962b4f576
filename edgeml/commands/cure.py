"""`edgeml cure`."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeml.commands._args import positive_float


def _text(text: str) -> str:
    """A non-empty string (a concept, an input name)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a non-empty string")
    return text


def _template(text: str) -> str:
    from edgeml.cure.embed import check_template
    from edgeml.errors import InputError

    try:
        return check_template(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(e.problem) from None


def _existing(text: str) -> Path:
    """A file or folder that exists."""
    if not text or not Path(text).exists():
        raise argparse.ArgumentTypeError(f"no such file or folder: {text!r}")
    return Path(text)


def _destination(text: str) -> Path:
    """An output path whose parent is (or can become) a folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a non-empty path")
    parent = Path(text).absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{parent} is a file, not a folder")
    return Path(text)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cure",
        help="erase concepts from a text-to-image diffusion UNet (CURE spectral eraser, or the UCE baseline)",
        description="Erase concepts from a text-conditioned diffusion UNet by editing every cross-attention "
        "key/value projection W <- W (I - P_dis), where P_dis = P_f - P_f P_r is built from the SVD of the text "
        "embeddings of --forget (and --retain) prompts with energy expansion alpha. Works on a diffusers "
        "pipeline folder, a safetensors file (a UNet state dict, or a single-file checkpoint in the original LDM "
        "layout as A1111 / ComfyUI load it), or an ONNX UNet (external data kept, only the edited bytes "
        "rewritten). The family (SD 1.x, SD 2.x, SDXL, SDXL refiner) is detected from the weights and reported; "
        "SDXL's two text encoders are concatenated per token as its pipeline does. Text encoders come from the "
        "pipeline folder, from the single file itself when it holds them (cond_stage_model. / "
        "conditioner.embedders.N.), else from --text-encoder (a diffusers pipeline folder). Editing an edited "
        "model composes; the report lists every edit. Writes a new model plus a JSON edit report; the input is "
        "never modified.",
    )
    p.add_argument("--model", type=_existing, required=True,
                   help="diffusers folder, .safetensors file, .onnx file or ONNX folder")
    p.add_argument("--forget", type=_text, action="append", default=[], required=True,
                   help="concept to erase (repeatable), or a text file of concepts, one a line (@FILE, or a path "
                   "ending in .txt; blank lines and # comments skipped)")
    p.add_argument("--retain", type=_text, action="append", default=[],
                   help="concept to keep intact (repeatable), or a concept file as for --forget")
    p.add_argument("--alpha", type=positive_float, default=2.0,
                   help="energy expansion α > 0 (2 objects/styles, 5 explicit)")
    p.add_argument("--method", choices=("cure", "uce"), default="cure", help="cure (default) or the UCE baseline")
    p.add_argument("--format", dest="fmt", choices=("onnx", "diffusers", "safetensors"), help="default: detected")
    p.add_argument("--text-encoder", type=_existing,
                   help="a diffusers pipeline folder (its text_encoder/ and text_encoder_2/), a text encoder folder "
                   "or .onnx (default: the pipeline's own, or the single file's cond_stage_model. / "
                   "conditioner.embedders.N. encoders)")
    p.add_argument("--tokenizer", type=_existing,
                   help="tokenizer folder (default: beside the text encoder, or CLIP BPE)")
    p.add_argument("--template", type=_template, action="append", dest="templates",
                   help='prompt template with {} (repeatable), default: "{}", "a photo of {}", "a painting of {}", ...')
    p.add_argument("--aggregation", choices=("mean", "eot", "last", "all"),
                   help="token aggregation (default: mean for cure, last for uce)")
    p.add_argument("--text-input", type=_text,
                   help="name of the ONNX UNet's text input (default: encoder_hidden_states)")
    p.add_argument("--out", type=_destination, required=True, help="new folder (onnx, diffusers) or .safetensors file")
    p.add_argument("--force", action="store_true", help="replace an existing --out (never an input)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgeml.cure import erase
    from edgeml.cure.embed import DEFAULT_TEMPLATES

    report = erase(args.model, args.out, args.forget, args.retain, method=args.method, alpha=args.alpha,
                   fmt=args.fmt, text_encoder=args.text_encoder, tokenizer=args.tokenizer,
                   templates=tuple(args.templates or DEFAULT_TEMPLATES), aggregation=args.aggregation,
                   text_input=args.text_input, force=args.force)
    s = report["seconds"]
    forget = report["forget"]
    named = ", ".join(forget[:5]) + (f" and {len(forget) - 5} more" if len(forget) > 5 else "")
    fam = report["family"]
    parts = " + ".join(f"{e['component']} {e['width']}" for e in fam["encoders"])
    print(f"{fam['label']} (context {fam['context_width']}: {parts})")
    print(f"{report['method']}: erased {named} from {report['tensors_edited']} K/V tensors "
          f"(rank {report['rank']}); text {s['text_encoding']:.2f}s, edit+write {s['edit_and_write']:.2f}s "
          f"-> {report['output']}")
    if len(report["edits"]) > 1:
        earlier = "; ".join(", ".join(map(str, e.get("forget", []))) for e in report["edits"][:-1])
        print(f"edit {len(report['edits'])} on this model (earlier: {earlier}); the report lists all")
    return 0
