"""The registry's config gate: unknown keys, wrong types and foreign checkpoints are one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from edgeml.errors import CheckpointError, ConfigError
from edgeml.io import load_checkpoint, save_checkpoint
from edgeml.registry import config_parameters, create_model


def test_unknown_config_key_names_it_and_the_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'unknown'.*valid keys: image_size, in_channels"):
        create_model("lls_smallconv", unknown=1)


def test_config_keys_come_from_the_model_class_behind_a_forwarding_factory():
    assert {"beta", "surrogate", "theta"} <= set(config_parameters("video_spiking"))  # video_spiking(**config)


@pytest.mark.parametrize("key, value", [("num_classes", "abc"), ("in_channels", 1.5), ("image_size", True),
                                        ("temperature", "hot"), ("mode", 3)])
def test_value_of_the_wrong_type_names_the_key(key, value):
    with pytest.raises(ConfigError, match=f"'{key}' of model 'lls_smallconv' must be"):
        create_model("lls_smallconv", **{key: value})


def test_int_is_accepted_where_a_float_is_expected():
    assert create_model("lls_smallconv", temperature=1).config["temperature"] == 1


@pytest.mark.parametrize("key, value, problem", [("waveform", "triangle", "waveform"), ("mode", "bogus", "mode"),
                                                 ("temperature", 0.0, "temperature"),
                                                 ("num_classes", -3, "negative dimension")])
def test_value_the_model_cannot_use_is_a_config_error(key, value, problem):
    with pytest.raises(ConfigError, match=problem):
        create_model("lls_smallconv", **{key: value})


def _raw_checkpoint(path: Path, meta_json: str) -> Path:
    path.write_bytes(save({"model.w": torch.zeros(2)}, metadata={"edgeml": meta_json}))
    return path


@pytest.mark.parametrize("meta_json, problem", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object naming its model"),
    ('{"epoch": 3}', "JSON object naming its model"),
    ('{"model": 7}', "JSON object naming its model"),
    ('{"model": "lls_smallconv", "config": [1]}', "'config' must be a JSON object"),
])
def test_checkpoint_metadata_of_the_wrong_shape_is_a_checkpoint_error(tmp_path, meta_json, problem):
    with pytest.raises(CheckpointError, match=problem):
        load_checkpoint(_raw_checkpoint(tmp_path / "c.safetensors", meta_json))


def test_checkpoint_config_with_an_unknown_key_is_a_checkpoint_error(tmp_path):
    path = _raw_checkpoint(tmp_path / "c.safetensors", '{"model": "lls_smallconv", "config": {"depth": 9}}')
    with pytest.raises(CheckpointError, match="unknown checkpoint config key 'depth'") as e:
        create_model("lls_smallconv", checkpoint=path)
    assert str(path) in str(e.value)


def test_weights_of_another_shape_are_one_line(tmp_path):
    torch.manual_seed(0)
    small = create_model("lls_smallconv", num_classes=2)
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {f"model.{k}": v for k, v in small.state_dict().items()},
                    {"model": "lls_smallconv", "config": {"num_classes": 10}})  # config says 10, weights hold 2
    with pytest.raises(CheckpointError, match="weights do not fit") as e:
        create_model("lls_smallconv", checkpoint=path)
    assert "\n" not in str(e.value)
