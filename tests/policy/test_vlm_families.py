"""Every VLM family irevla supports: a tiny model from config encodes, acts, trains with SFT and takes LoRA where
intended; its real-size preset has the published parameter count (built on the meta device: no memory); a snapshot
laid out as the model hub lays it out (sharded safetensors + index, tokenizer, processor files) loads, and every
way a snapshot can be broken is an error that names the file."""

import json
import shutil

import numpy as np
import pytest
import torch
from policy_factory import IMAGE, tiny_config, tiny_policy, write_dataset
from test_sft import sft_config

from irevla.errors import MissingFileError
from irevla.policy.backbones import KINDS, build_backbone
from irevla.policy.backbones.snapshot import SnapshotError
from irevla.policy.checkpoint import load_policy
from irevla.policy.config import BackboneConfig, LoraSettings
from irevla.policy.presets import PRESETS, preset_backbone_config, published_parameters
from irevla.policy.sft import run_sft
from irevla.spec import Observation

GENERIC = ("paligemma", "smolvlm", "qwen2_vl", "qwen2_5_vl", "qwen3_vl")  # through image_text.ImageTextAdapter


def _observation(seed=0, instruction="push left"):
    rng = np.random.default_rng(seed)
    return Observation(images={"front": rng.integers(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8)},
                       proprio=rng.uniform(-1, 1, 4).astype(np.float32), instruction=instruction)


# ------------------------------------------------------------------------------------------- tiny, from config
@pytest.mark.parametrize("kind", KINDS)
def test_a_tiny_model_of_each_family_encodes_and_acts(kind):
    policy = tiny_policy(kind, training="frozen")
    action = policy.act(_observation())
    assert action.values.shape == (4,) and np.isfinite(action.values).all()
    assert np.all(np.abs(action.values) <= 1.0)
    with torch.no_grad():
        latent = policy.encode({"front": torch.zeros(2, IMAGE, IMAGE, 3, dtype=torch.uint8)}, ["push left", "x"])
    assert latent.tokens.shape == (2, *policy.latent_shape)
    # The latent depends on the image: the image tokens really are filled with the vision tower's features.
    with torch.no_grad():
        white = policy.encode({"front": torch.full((2, IMAGE, IMAGE, 3), 255, dtype=torch.uint8)}, ["push left", "x"])
    assert not torch.allclose(latent.tokens, white.tokens)


@pytest.mark.parametrize("kind", GENERIC)
def test_lora_targets_the_language_model_or_everything_but_never_the_vocabulary(kind):
    policy = tiny_policy(kind, training="frozen")
    language = policy.backbone.language_model_name()
    layers = policy.add_lora(LoraSettings(r=2, targets="language"))
    assert layers and all(name.startswith(language + ".") for name in layers)
    assert any(name.endswith(("q_proj", "qkv")) for name in layers)
    policy.merge_lora()
    everything = policy.add_lora(LoraSettings(r=2, targets="all"))
    outside = [name for name in everything if not name.startswith(language + ".")]
    vision = [name for name in outside if any(part in name for part in ("vision", "visual"))]
    projector = [name for name in outside if any(part in name for part in ("projector", "connector", "merger"))]
    assert vision and projector, outside[:5]
    assert not any(name.startswith("lm_head") for name in everything)


@pytest.mark.parametrize("kind", GENERIC)
def test_one_lora_sft_run_of_each_family_trains_saves_and_reloads(kind, tmp_path):
    data = write_dataset(tmp_path / "data", episodes_per_task=2)
    config = sft_config(data, tmp_path / "run", tiny_config(kind, training="lora"), steps=2, batch_size=4,
                        eval_every=2, checkpoint_every=2, log_every=1)
    before = tiny_policy(kind, training="lora")
    result = run_sft(config, log=None)
    assert result.steps == 2 and np.isfinite(result.train_loss)
    trained = load_policy(result.policy_dir)
    assert trained.lora_layers and trained.config.backbone.kind == kind
    changed = [name for name, tensor in trained.backbone.state_dict().items()
               if ".lora_" in name and not torch.equal(tensor, before.backbone.state_dict()[name])]
    assert changed  # the adapters trained (B starts at zero: it moved)
    base = [name for name in before.backbone.state_dict() if ".lora_" not in name]
    for name in base[:20]:  # the base weights did not
        torch.testing.assert_close(trained.backbone.state_dict()[name], before.backbone.state_dict()[name])
    observation = _observation(seed=3)
    np.testing.assert_allclose(trained.act(observation).values, load_policy(result.policy_dir).act(observation).values)


# ------------------------------------------------------------------------------------------ real-size presets
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_real_size_preset_has_the_published_parameter_count(name):
    config = preset_backbone_config(name)
    with torch.device("meta"):  # shapes only, no memory
        backbone = build_backbone(config)
    count = sum(p.numel() for p in backbone.parameters())
    assert abs(count - published_parameters(name)) <= 0.01 * published_parameters(name), (count, name)
    assert all(p.device.type == "meta" for p in backbone.parameters())
    assert backbone.latent_length(1) == backbone.image_tokens_per_camera() + config.max_text_tokens


def test_preset_latent_shapes_are_the_documented_ones():
    expected = {"blip2-opt-2.7b": (32, 2560), "paligemma2-3b-pt-224": (256, 2304), "smolvlm2-500m": (67, 960),
                "qwen2-vl-2b": (66, 1536), "qwen2.5-vl-3b": (66, 2048), "qwen3-vl-2b": (51, 2048)}
    assert set(expected) == set(PRESETS)
    for name, (tokens, width) in expected.items():
        with torch.device("meta"):
            backbone = build_backbone(preset_backbone_config(name))
        assert (backbone.image_tokens_per_camera(), backbone.hidden_size) == (tokens, width), name


# --------------------------------------------------------------------------------------------- local snapshots
SPECIAL = {"smolvlm": ["<fake_token_around_image>", "<global-img>", "<image>"],
           "paligemma": ["<image>"], "qwen2_vl": ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]}


def _save_tokenizer(directory, kind):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", "<unk>", "push", "left", "right"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>")
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL.get(kind, [])})
    tokenizer.save_pretrained(directory)


def _save_processor(directory, kind):
    """The family's own image processor config (the PIL ones: no torchvision), as a hub snapshot has it."""
    from transformers import BlipImageProcessorPil, SiglipImageProcessorPil, SmolVLMImageProcessorPil

    processor = {"blip2": BlipImageProcessorPil, "paligemma": SiglipImageProcessorPil,
                 "smolvlm": SmolVLMImageProcessorPil}.get(kind)
    if processor is None:
        from transformers import Qwen2VLImageProcessorPil as processor
    processor(image_mean=[0.25, 0.5, 0.75], image_std=[0.5, 0.25, 0.5]).save_pretrained(directory)


def make_snapshot(directory, kind, shard_kb=300):
    """A tiny random model of `kind` saved as the hub lays a snapshot out: config.json, model-0000k-of-0000n
    .safetensors + model.safetensors.index.json, tokenizer files, preprocessor_config.json."""
    torch.manual_seed(0)
    source = build_backbone(tiny_config(kind).backbone)
    source.model.save_pretrained(directory, max_shard_size=f"{shard_kb}KB")
    _save_tokenizer(directory, kind)
    _save_processor(directory, kind)
    return source


@pytest.mark.parametrize("kind", KINDS)
def test_a_hub_layout_snapshot_loads_with_its_tokenizer_and_image_statistics(tmp_path, kind):
    source = make_snapshot(tmp_path, kind)
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) >= 2
    loaded = build_backbone(BackboneConfig(kind=kind, pretrained=str(tmp_path), image_size=IMAGE,
                                           max_text_tokens=6))
    assert loaded.image_mean == (0.25, 0.5, 0.75) and loaded.image_std == (0.5, 0.25, 0.5)
    for name, tensor in source.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], tensor, msg=name)
    with torch.no_grad():
        latent = loaded.encode([torch.randint(0, 256, (2, IMAGE, IMAGE, 3), dtype=torch.uint8)],
                               ["push left", "push right now"])
    assert latent.tokens.shape == (2, loaded.latent_length(1), loaded.hidden_size)
    bos = 1 if kind == "paligemma" else 0  # PaliGemma's prompt starts with <bos>, as its processor's does
    assert latent.mask[:, -6:].sum(1).tolist() == [2 + bos, 3 + bos]  # word-level tokens, padded to 6
    assert torch.isfinite(latent.tokens).all()


def test_a_broken_snapshot_is_an_error_that_names_the_file(tmp_path):
    good = tmp_path / "good"
    make_snapshot(good, "qwen2_5_vl")

    def broken(name):
        target = tmp_path / name
        shutil.copytree(good, target)
        return target

    def load(path, kind="qwen2_5_vl"):
        return build_backbone(BackboneConfig(kind=kind, pretrained=str(path), image_size=IMAGE))

    with pytest.raises(MissingFileError, match="never downloads"):
        load("Qwen/Qwen2.5-VL-3B-Instruct")
    with pytest.raises(SnapshotError, match=r"config.json: field 'model_type': backbone.kind 'paligemma' expects "
                                            r"'paligemma', the snapshot is 'qwen2_5_vl'"):
        load(good, kind="paligemma")

    missing_shard = broken("missing_shard")
    (missing_shard / "model-00002-of-0000{}.safetensors".format(
        len(list(good.glob("model-*.safetensors"))))).unlink()
    with pytest.raises(MissingFileError, match=r"model-00002-of-\d+\.safetensors: missing .*interrupted download"):
        load(missing_shard)

    no_weights = broken("no_weights")
    for path in no_weights.glob("model*.safetensors*"):
        path.unlink()
    (no_weights / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(MissingFileError, match=r"model.safetensors: missing .*pytorch_model.bin \(pickle\)"):
        load(no_weights)

    no_tokenizer = broken("no_tokenizer")
    (no_tokenizer / "tokenizer.json").unlink()
    with pytest.raises(MissingFileError, match=r"tokenizer.json: missing"):
        load(no_tokenizer)

    bad_json = broken("bad_json")
    (bad_json / "config.json").write_text("{not json")
    with pytest.raises(SnapshotError, match=r"bad_json/config.json: not valid JSON"):
        load(bad_json)

    # Weights of another shape than config.json describes: the shard holding the tensor is named.
    wrong_shape = broken("wrong_shape")
    config = json.loads((wrong_shape / "config.json").read_text())
    config["text_config"]["intermediate_size"] += 8
    (wrong_shape / "config.json").write_text(json.dumps(config))
    with pytest.raises(SnapshotError, match=r"model-\d+-of-\d+\.safetensors: tensor '.*mlp\..*' has shape "
                                            r".*config.json describes"):
        load(wrong_shape)

    # A shard replaced by another one: tensors the model needs are absent.
    mixed = broken("mixed")
    index = json.loads((mixed / "model.safetensors.index.json").read_text())
    dropped = sorted(index["weight_map"])[:3]
    from safetensors.torch import load_file, save_file
    for shard in {index["weight_map"][name] for name in dropped}:
        tensors = load_file(str(mixed / shard))
        save_file({k: v for k, v in tensors.items() if k not in dropped}, str(mixed / shard),
                  metadata={"format": "pt"})
    with pytest.raises(SnapshotError, match=r"model.safetensors.index.json: \d weight\(s\) the model needs are not "
                                            r"in the snapshot"):
        load(mixed)


def test_the_family_processors_normalise_as_irevla_does():
    """At the vision tower's native size (no resize), irevla's torch preprocessing equals the family's own image
    processor: same rescale, same mean / std, same channel order."""
    from transformers import SiglipImageProcessorPil

    from irevla.policy.images import to_pixels

    image = np.random.default_rng(0).integers(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8)
    processor = SiglipImageProcessorPil(size={"height": IMAGE, "width": IMAGE}, image_mean=[0.5] * 3,
                                        image_std=[0.5] * 3)
    reference = processor(images=[image], return_tensors="pt")["pixel_values"]
    ours = to_pixels(torch.from_numpy(image)[None], IMAGE, (0.5,) * 3, (0.5,) * 3)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ("paligemma", "qwen2_5_vl"))
def test_gradient_checkpointing_gives_the_same_gradients(kind):
    def gradients(checkpointing):
        policy = tiny_policy(kind, training="lora", seed=1)
        if checkpointing:
            policy.backbone.enable_gradient_checkpointing()
            assert policy.backbone.model.model.get_decoder().gradient_checkpointing
        policy.train()
        images = {"front": torch.randint(0, 256, (3, IMAGE, IMAGE, 3), dtype=torch.uint8,
                                         generator=torch.Generator().manual_seed(0))}
        policy(images, ["push left", "push right", "x"], torch.zeros(3, 4)).pow(2).mean().backward()
        return {name: p.grad.clone() for name, p in policy.named_parameters() if p.grad is not None}

    plain, checkpointed = gradients(False), gradients(True)
    assert plain.keys() == checkpointed.keys() and any(".lora_" in name for name in plain)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)


def _one_layer_deep(name):
    """Preset `name`'s transformers config with every stack cut to one layer: the real widths, heads, KV heads,
    vocabulary, patch and image sizes, in a model small enough to act on a CPU."""
    from irevla.policy.presets import preset_hf_config

    hf = preset_hf_config(name, PRESETS[name][0])
    hf.get_text_config().num_hidden_layers = 1
    if getattr(hf.get_text_config(), "layer_types", None):
        hf.get_text_config().layer_types = hf.get_text_config().layer_types[:1]
    vision = hf.vision_config
    for field in ("num_hidden_layers", "depth"):
        if hasattr(vision, field):
            setattr(vision, field, 1)
    if hasattr(vision, "fullatt_block_indexes"):
        vision.fullatt_block_indexes = [0]
    if hasattr(vision, "deepstack_visual_indexes"):
        vision.deepstack_visual_indexes = [0]
    if hasattr(hf, "qformer_config"):
        hf.qformer_config.num_hidden_layers = 1
    return hf.to_dict()


@pytest.mark.parametrize("name", ["blip2-opt-2.7b", "smolvlm2-500m", "qwen3-vl-2b"])
def test_real_width_presets_act_at_their_native_image_size(name):
    """The presets' real shapes (not only their parameter counts) go through encode and the head: one layer deep,
    bf16, at the native image size. (All six were run this way once by hand; these three are the cheap ones.)"""
    from policy_factory import make_episode, make_task

    from irevla.data.stats import compute_stats
    from irevla.policy.config import PolicyConfig
    from irevla.policy.vla import VLAPolicy
    from irevla.spec import METAWORLD_PROPRIO, ActionSpec, ObservationSpec

    config = PolicyConfig(backbone=preset_backbone_config(name, dtype="bfloat16"), backbone_training="frozen")
    size = config.backbone.image_size
    torch.manual_seed(0)
    backbone = build_backbone(config.backbone, _one_layer_deep(name))
    stats = compute_stats([make_episode(s, make_task()) for s in range(2)])
    policy = VLAPolicy(config, backbone, ActionSpec.metaworld(), ObservationSpec({"front": (size, size)},
                                                                                 METAWORLD_PROPRIO), stats).eval()
    rng = np.random.default_rng(0)
    observation = Observation(images={"front": rng.integers(0, 256, (size, size, 3), dtype=np.uint8)},
                              proprio=np.zeros(4, np.float32), instruction="press the button")
    action = policy.act(observation)
    assert np.isfinite(action.values).all()
    with torch.inference_mode():
        latent = policy.encode({"front": torch.from_numpy(observation.images["front"])[None]}, ["press the button"])
    assert latent.tokens.shape == (1, *policy.latent_shape) and latent.tokens.dtype == torch.bfloat16
    assert policy.latent_shape[1] == {"blip2-opt-2.7b": 2560, "smolvlm2-500m": 960, "qwen3-vl-2b": 2048}[name]


@pytest.mark.parametrize("kind", GENERIC)
def test_compiled_policy_acts_exactly_like_the_eager_one_with_its_blocks_compiled_cleanly(kind):
    """VLAPolicy.compile compiles each language-model and vision block and the head (tracing backend here): the
    same actions, and no graph break inside a language-model block."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    policy = tiny_policy(kind, training="frozen")
    observation = _observation(seed=5)
    eager = policy.act(observation).values
    torch._dynamo.reset()
    counters.clear()
    modules = policy.compile(backend="eager")
    language = policy.backbone.language_model_name()
    assert "head" in modules and sum(name.startswith(language + ".") for name in modules) == 2  # tiny: 2 layers
    assert any(not name.startswith(language + ".") and name != "head" for name in modules)  # vision blocks
    np.testing.assert_array_equal(policy.act(observation).values, eager)
    vision_breaks = sum(counters["graph_break"].values())
    # The language-model blocks and the head trace without a single graph break (Qwen's vision blocks break on
    # their data-dependent attention boundaries; PaliGemma's and SmolVLM's do not).
    torch._dynamo.reset()
    counters.clear()
    fresh = tiny_policy(kind, training="frozen")
    for name, module in {**fresh.backbone.compile_targets(), "head": fresh.head}.items():
        if name == "head" or name.startswith(language + "."):
            module.compile(backend="eager")
    np.testing.assert_array_equal(fresh.act(observation).values, eager)
    assert sum(counters["graph_break"].values()) == 0
    assert vision_breaks == 0 or kind.startswith("qwen")
    torch._dynamo.reset()


def test_the_cli_checks_a_downloaded_snapshot_and_lists_the_presets(tmp_path, capsys):
    from irevla.cli import main

    make_snapshot(tmp_path / "smol", "smolvlm")
    assert main(["policy", "check-snapshot", str(tmp_path / "smol"), "--kind", "smolvlm"]) == 0
    out = capsys.readouterr().out
    assert "a smolvlm model (SmolVLMForConditionalGeneration)" in out and "ok: set policy.backbone.kind" in out
    assert "mean (0.25, 0.5, 0.75)" in out
    (tmp_path / "smol" / "tokenizer.json").unlink()
    assert main(["policy", "check-snapshot", str(tmp_path / "smol"), "--kind", "smolvlm"]) == 2
    assert "tokenizer.json: missing" in capsys.readouterr().err
    assert main(["policy", "backbones", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {row["preset"] for row in listed["presets"]} == set(PRESETS)
    assert all(row["parameters"] == row["published_parameters"] or row["preset"] == "blip2-opt-2.7b"
               for row in listed["presets"])


def test_the_paligemma_sequence_is_the_one_its_own_processor_builds(tmp_path):
    """PaliGemma's processor (SigLIP's PIL image processor + the snapshot's tokenizer) lays out ``<image> x N <bos>
    prompt \\n``; the adapter's image block and instruction tokens are the same ids. (SmolVLM's and Qwen's
    processors need a video processor, i.e. torchvision, which this project does not install.)"""
    from transformers import AutoTokenizer, PaliGemmaProcessor, SiglipImageProcessorPil

    _save_tokenizer(tmp_path, "paligemma")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    config = tiny_config("paligemma").backbone
    hf = build_backbone(config).model.config
    hf.image_token_index = tokenizer.convert_tokens_to_ids("<image>")  # the snapshot's own id, as on the hub
    torch.manual_seed(0)
    from irevla.policy.backbones.paligemma import PaliGemmaAdapter

    PaliGemmaAdapter.new_model(hf).save_pretrained(tmp_path)
    image_processor = SiglipImageProcessorPil(size={"height": IMAGE, "width": IMAGE})
    image_processor.image_seq_length = (IMAGE // config.patch_size) ** 2
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    reference = processor(text=["<image>push left"], images=[np.zeros((IMAGE, IMAGE, 3), np.uint8)],
                          return_tensors="pt")["input_ids"][0].tolist()

    backbone = build_backbone(BackboneConfig(kind="paligemma", pretrained=str(tmp_path), image_size=IMAGE,
                                             max_text_tokens=8))
    text = backbone.tokenizer(backbone.prompts(["push left"]))
    ours = backbone.image_block_ids() + text.ids[0][text.mask[0]].tolist()
    assert ours == reference
    assert reference[len(backbone.image_block_ids())] == tokenizer.bos_token_id


def test_the_shipped_sft_configs_are_valid():
    """config/sft*.yaml (the tiny demo's and the pretrained GPU ones) load as SFT configs: no stale key survives."""
    from pathlib import Path

    from irevla.config import load_config
    from irevla.policy.config import SFTConfig

    configs = sorted((Path(__file__).resolve().parents[2] / "config").glob("sft*.yaml"))
    assert len(configs) >= 3
    kinds = {load_config(path, SFTConfig).policy.backbone.kind for path in configs}
    assert {"blip2", "smolvlm"} <= kinds
