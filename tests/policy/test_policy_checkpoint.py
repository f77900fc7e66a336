"""Checkpoints: safetensors + JSON, identical outputs after loading, content hashes, clear errors, no pickle."""

import json

import numpy as np
import pytest
import torch
from policy_factory import IMAGE, tiny_config, tiny_policy
from safetensors.torch import load_file, save_file

from irevla.policy.backbones import build_backbone
from irevla.policy.checkpoint import load_head, load_policy, read_manifest, save_head, save_policy
from irevla.policy.config import BackboneConfig
from irevla.policy.errors import CheckpointError
from irevla.spec import Observation


def _perturb_lora(policy):
    with torch.no_grad():
        for name, parameter in policy.backbone.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.2)


def _observations():
    rng = np.random.default_rng(0)
    return [Observation(images={"front": rng.integers(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8)},
                        proprio=rng.uniform(-1, 1, 4).astype(np.float32), instruction=text)
            for text in ("push left", "push right")]


def _actions(policy):
    return np.stack([a.values for a in policy.act_batch(_observations())])


@pytest.mark.parametrize("kind,training", [("blip2", "lora"), ("qwen2_vl", "full")])
def test_a_loaded_policy_acts_exactly_like_the_saved_one(tmp_path, kind, training):
    policy = tiny_policy(kind, training=training)
    _perturb_lora(policy)
    checkpoint_id = save_policy(policy, tmp_path / "ckpt", info={"step": 7})
    loaded = load_policy(tmp_path / "ckpt")
    np.testing.assert_array_equal(_actions(loaded), _actions(policy))
    assert loaded.checkpoint_id == checkpoint_id == policy.checkpoint_id
    assert loaded.lora_layers == policy.lora_layers and loaded.cameras == policy.cameras
    assert loaded.stats == policy.stats and loaded.action_spec == policy.action_spec
    trainable = {n for n, p in loaded.backbone.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in policy.backbone.named_parameters() if p.requires_grad}
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["backbone.safetensors", "head.safetensors", "policy.json", "stats.json"]
    manifest = read_manifest(tmp_path / "ckpt")
    assert manifest["info"] == {"step": 7} and manifest["base_weights"] == "included"
    # Saving the same weights again gives the same id; other weights give another.
    assert save_policy(loaded, tmp_path / "again") == checkpoint_id
    with torch.no_grad():
        loaded.head.mlp.out.bias.add_(0.1)
    assert save_policy(loaded, tmp_path / "changed") != checkpoint_id


def test_saving_over_a_checkpoint_replaces_it_whole(tmp_path):
    first, second = tiny_policy(seed=0), tiny_policy(seed=1)
    save_policy(first, tmp_path / "ckpt")
    second_id = save_policy(second, tmp_path / "ckpt")
    assert read_manifest(tmp_path / "ckpt")["checkpoint_id"] == second_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary or old directories left behind


def test_a_modified_file_is_refused_with_its_name(tmp_path):
    save_policy(tiny_policy(), tmp_path / "ckpt")
    head = tmp_path / "ckpt" / "head.safetensors"
    tensors = load_file(str(head))
    tensors["mlp.out.bias"] = tensors["mlp.out.bias"] + 1
    save_file(tensors, str(head), metadata={"irevla": json.dumps({"format": "irevla-head", "version": 1})})
    with pytest.raises(CheckpointError, match=r"head\.safetensors: content hash sha256:\w+ does not match"):
        load_policy(tmp_path / "ckpt")
    load_policy(tmp_path / "ckpt", verify=False)  # an explicit opt-out still loads (the tensors are valid)


def test_missing_and_malformed_parts_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="policy checkpoint directory not found"):
        load_policy(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty/policy\.json: missing"):
        load_policy(tmp_path / "empty")

    save_policy(tiny_policy(), tmp_path / "ckpt")
    manifest_path = tmp_path / "ckpt" / "policy.json"
    original = json.loads(manifest_path.read_text())

    def write(**changes):
        manifest_path.write_text(json.dumps({**original, **changes}))

    write(format="something-else")
    with pytest.raises(CheckpointError, match="field 'format': expected 'irevla-policy', got 'something-else'"):
        load_policy(tmp_path / "ckpt")
    write(version=99)
    with pytest.raises(CheckpointError, match="field 'version': expected 1"):
        load_policy(tmp_path / "ckpt")
    write(cameras=["front", "wrist"])
    with pytest.raises(CheckpointError, match="field 'checkpoint_id' does not match"):
        load_policy(tmp_path / "ckpt")
    broken = dict(original)
    del broken["action_spec"]
    manifest_path.write_text(json.dumps(broken))
    with pytest.raises(CheckpointError, match="missing field 'action_spec'"):
        load_policy(tmp_path / "ckpt")
    manifest_path.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"policy\.json: not valid JSON"):
        load_policy(tmp_path / "ckpt")
    write()
    (tmp_path / "ckpt" / "stats.json").unlink()
    with pytest.raises(CheckpointError, match=r"stats\.json: missing"):
        load_policy(tmp_path / "ckpt")


def test_backbone_tensors_that_do_not_fit_the_model_are_refused(tmp_path):
    policy = tiny_policy()
    save_policy(policy, tmp_path / "ckpt")
    # Rewrite the backbone file without a tensor and fix up the hashes, as a buggy writer might.
    backbone = tmp_path / "ckpt" / "backbone.safetensors"
    tensors = load_file(str(backbone))
    dropped = min(tensors)
    del tensors[dropped]
    save_file(tensors, str(backbone))
    with pytest.raises(CheckpointError,
                       match=rf"backbone\.safetensors: tensors do not match .*missing \['{dropped}'\]"):
        load_policy(tmp_path / "ckpt", verify=False)


def test_no_pickle_anywhere(tmp_path):
    """Only safetensors and JSON are written; nothing torch.load / pickle could read."""
    save_policy(tiny_policy(), tmp_path / "ckpt")
    for path in (tmp_path / "ckpt").iterdir():
        data = path.read_bytes()
        assert not data.startswith(b"\x80") and b"PK\x03\x04" not in data[:4]  # pickle protocol / torch zip
        if path.suffix == ".json":
            json.loads(data)
        else:
            load_file(str(path))


def test_the_head_file_stands_alone_for_the_rl_learner(tmp_path):
    policy = tiny_policy()
    save_policy(policy, tmp_path / "ckpt")
    tensors, metadata = load_head(tmp_path / "ckpt" / "head.safetensors")
    assert set(tensors) == set(policy.head_state())
    assert metadata["action_dim"] == 4 and metadata["proprio_dim"] == 4
    assert metadata["latent_dim"] == policy.latent_shape[1] and metadata["latent_length"] == policy.latent_shape[0]
    assert metadata["head_config"]["token_dim"] == 32

    # A learner writes an updated head back; the policy takes it.
    updated = {name: tensor + 0.01 for name, tensor in tensors.items()}
    save_head(tmp_path / "new_head.safetensors", updated, metadata)
    loaded_tensors, _ = load_head(tmp_path / "new_head.safetensors")
    policy.load_head_state(loaded_tensors)
    torch.testing.assert_close(policy.head.mlp.out.bias, updated["mlp.out.bias"])

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"),
              metadata={"irevla": json.dumps({"format": "other"})})
    with pytest.raises(CheckpointError, match="metadata 'format': expected 'irevla-head', got 'other'"):
        load_head(tmp_path / "other.safetensors")
    save_file({"x": torch.tensor([float("nan")])}, str(tmp_path / "nan.safetensors"),
              metadata={"irevla": json.dumps({"format": "irevla-head", "version": 1})})
    with pytest.raises(CheckpointError, match="tensor 'x' contains NaN/inf"):
        load_head(tmp_path / "nan.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="junk.safetensors: not a readable safetensors file"):
        load_head(tmp_path / "junk.safetensors")


def test_pretrained_base_weights_are_referenced_not_copied(tmp_path):
    """With an unmodified local pretrained backbone + LoRA, the checkpoint stores only the adapters."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    base_dir = tmp_path / "base"
    torch.manual_seed(0)
    build_backbone(tiny_config().backbone).model.save_pretrained(base_dir)
    core = Tokenizer(models.WordLevel({"<pad>": 0, "<unk>": 1, "push": 2, "left": 3}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>").save_pretrained(base_dir)

    config = tiny_config()
    config = config.model_copy(update={"backbone": BackboneConfig(kind="blip2", pretrained=str(base_dir),
                                                                  image_size=IMAGE, max_text_tokens=8)})
    from policy_factory import make_episode, make_task

    from irevla.data.stats import compute_stats
    from irevla.policy.vla import VLAPolicy

    task = make_task()
    policy = VLAPolicy.build(config, task.action_spec, task.observation_spec,
                             compute_stats([make_episode(0, task)]))
    _perturb_lora(policy)
    save_policy(policy, tmp_path / "ckpt")
    manifest = read_manifest(tmp_path / "ckpt")
    assert manifest["base_weights"] == "pretrained"
    stored = load_file(str(tmp_path / "ckpt" / "backbone.safetensors"))
    assert stored and all(".lora_" in name for name in stored)
    np.testing.assert_array_equal(_actions(load_policy(tmp_path / "ckpt")), _actions(policy))

    policy.merge_lora()  # base weights now differ from the directory: they must be stored
    save_policy(policy, tmp_path / "merged")
    assert read_manifest(tmp_path / "merged")["base_weights"] == "included"
    np.testing.assert_allclose(_actions(load_policy(tmp_path / "merged")), _actions(policy), atol=1e-6)

    (base_dir / "config.json").write_text((base_dir / "config.json").read_text().replace("}", ' }', 1))
    with pytest.raises(CheckpointError, match="field 'pretrained': the base model directory .* changed"):
        load_policy(tmp_path / "ckpt")
