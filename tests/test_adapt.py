"""How a model adapts: LoRA (peft) and BitFit on torchvision and timm models, with freeze; the merged
model.pt; checkpoints that resume exactly with adapters (issue 17, item 3)."""

from __future__ import annotations

import pytest
import torch
import torchvision

timm = pytest.importorskip("timm")
pytest.importorskip("peft")

from helpers import tiny_config  # noqa: E402
from transferlab import adapt  # noqa: E402
from transferlab.checkpoint import Checkpoint, checkpoint_state, restore  # noqa: E402
from transferlab.errors import ConfigError  # noqa: E402
from transferlab.models import apply_freeze, frozen_modules, trainable_parameter_names  # noqa: E402
from transferlab.run import run_training  # noqa: E402
from transferlab.schedules import ScheduleFactor, make_scheduler  # noqa: E402


def _tiny_vit(num_classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_vit", pretrained=False, num_classes=num_classes, img_size=32)


def _adapted(model, name: str, head: str, **lora):
    """``model`` with nothing frozen, adapted by ``name``."""
    trainable = [name for name, _ in model.named_parameters()]
    return adapt.adapt_model(model, name, head, (), trainable, adapt.LoraSettings(**lora))


def _trainable(model) -> list[str]:
    return [name for name, p in model.named_parameters() if p.requires_grad]


# --- which modules LoRA adapts ------------------------------------------------------------------------

def test_lora_defaults_are_a_vits_attention_and_mlp_linears_and_a_cnns_convolutions():
    vit = _tiny_vit()
    assert adapt.default_lora_targets(vit, "head")[:4] == ["blocks.0.attn.qkv", "blocks.0.attn.proj",
                                                            "blocks.0.mlp.fc1", "blocks.0.mlp.fc2"]
    assert len(adapt.default_lora_targets(vit, "head")) == 6 * 4  # no head, no patch embedding
    with torch.device("meta"):
        torchvision_vit = torchvision.models.vit_b_16()
        resnet = torchvision.models.resnet18()
        mobilenet = torchvision.models.mobilenet_v2()
    targets = adapt.default_lora_targets(torchvision_vit, "heads.head")
    # torchvision's attention reads its out_proj's weight directly: the attention is adapted as a whole
    assert targets[:3] == ["encoder.layers.encoder_layer_0.self_attention", "encoder.layers.encoder_layer_0.mlp.0",
                           "encoder.layers.encoder_layer_0.mlp.3"] and len(targets) == 36
    convs = adapt.default_lora_targets(resnet, "fc")
    assert convs[0] == "conv1" and len(convs) == 20
    # depthwise convolutions cannot be merged by peft: left out
    assert all(mobilenet.get_submodule(name).groups == 1 for name in adapt.default_lora_targets(mobilenet,
                                                                                                "classifier.1"))


def test_lora_targets_that_match_nothing_list_the_module_types_found():
    vit = _tiny_vit()
    with pytest.raises(ConfigError, match=r"adapt.target_modules=\['query'\] matches no module.*types: Conv2d, "
                                          r"Linear \(e.g. proj, qkv, fc1, fc2\)"):
        adapt.lora_targets(vit, "head", (), ("query",))
    assert adapt.lora_targets(vit, "head", (), ("qkv",)) == [f"blocks.{i}.attn.qkv" for i in range(6)]
    with torch.device("meta"):
        mobilenet = torchvision.models.mobilenet_v2()
    with pytest.raises(ConfigError, match="cannot adapt and merge: features.1.conv.0.0 \\(Conv2d\\)"):
        adapt.lora_targets(mobilenet, "classifier.1", (), ("0.0",))


# --- LoRA ----------------------------------------------------------------------------------------------------

def test_lora_trains_the_adapters_and_the_head_only_and_model_pt_is_the_merged_plain_architecture():
    model, record = _adapted(_tiny_vit(), "lora", "head", rank=4, alpha=8.0)
    assert record["name"] == "lora" and record["adapted_modules"] == 24
    trainable = _trainable(model)
    assert all(".lora_" in name or ".modules_to_save." in name for name in trainable)
    assert any(name.endswith("head.modules_to_save.default.weight") for name in trainable)
    for name, parameter in model.named_parameters():  # a trained adapter: B no longer zero
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.1)
    model.eval()
    images = torch.randn(2, 3, 32, 32)
    plain = timm.create_model("test_vit", pretrained=False, num_classes=3, img_size=32).eval()
    plain.load_state_dict(adapt.plain_state_dict(model), strict=True)
    assert torch.allclose(plain(images), model(images), atol=1e-5)
    assert adapt.is_peft(model)  # the run's model keeps its adapters after model.pt is made


def test_lora_leaves_the_frozen_stages_without_adapters():
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    frozen = frozen_modules(model, "timm/test_resnet", "early", None)
    trainable = trainable_parameter_names(model, frozen)
    apply_freeze(model, trainable)
    adapted, record = adapt.adapt_model(model, "lora", "fc", frozen, trainable, adapt.LoraSettings())
    names = _trainable(adapted)
    assert not any(".layer1." in n or ".layer2." in n for n in names)
    assert any(".layer3." in n and "lora_A" in n for n in names)


def test_base_parameter_names_map_peft_names_onto_the_plain_architecture():
    assert adapt.base_parameter_name("base_model.model.blocks.0.attn.qkv.base_layer.weight") == "blocks.0.attn.qkv.weight"
    assert adapt.base_parameter_name("base_model.model.blocks.0.attn.qkv.lora_B.default.weight") == \
        "blocks.0.attn.qkv.weight"
    assert adapt.base_parameter_name("base_model.model.head.modules_to_save.default.bias") == "head.bias"


# --- BitFit ---------------------------------------------------------------------------------------------------

def test_bitfit_trains_biases_norms_and_the_head_inside_what_freeze_leaves():
    model = torchvision.models.resnet18(weights=None, num_classes=3)
    frozen = frozen_modules(model, "resnet18", "early", None)
    trainable = trainable_parameter_names(model, frozen)
    apply_freeze(model, trainable)
    adapt.adapt_model(model, "bitfit", "fc", frozen, trainable, adapt.LoraSettings())
    names = _trainable(model)
    assert "fc.weight" in names and "layer3.0.bn1.weight" in names and "layer4.1.bn2.bias" in names
    assert "layer3.0.conv1.weight" not in names and "bn1.weight" in names
    assert not any(n.startswith(("layer1.", "layer2.")) for n in names)
    vit, _ = _adapted(_tiny_vit(), "bitfit", "head")
    vit_names = _trainable(vit)
    assert "blocks.0.attn.qkv.bias" in vit_names and "blocks.0.norm1.weight" in vit_names
    assert "blocks.0.attn.qkv.weight" not in vit_names and "head.weight" in vit_names


# --- config -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    (["adapt=lora", "freeze=last_only"], "adapt=lora with freeze=last_only leaves only the head"),
    (["adapt=bitfit", "freeze=lp_ft", "train.epochs=2"], "adapt=bitfit does not combine with LP-FT"),
    (["adapt=bitfit", "adapt.target_modules=[qkv]"], "adapt.target_modules=\\['qkv'\\] is LoRA's"),
    (["adapt=lora", "adapt.rank=0"], "adapt.rank=0 is not allowed"),
    (["adapt=lora", "adapt.target_modules=[]"], "adapts nothing"),
    (["adapt=adapters"], "choose one of 'adapt': bitfit, lora, none"),
])
def test_adapt_settings_that_do_not_make_sense_are_refused_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as error:
        tiny_config(*overrides)
    assert "\n" not in str(error.value)


# --- checkpoints -------------------------------------------------------------------------------------------

def _train_steps(model, optimizer, scheduler, steps: int, seed: int) -> list[float]:
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        images = torch.randn(4, 3, 32, 32, generator=generator)
        labels = torch.randint(0, 3, (4,), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return losses


def _adapted_run():
    model, _ = _adapted(_tiny_vit(), "lora", "head", dropout=0.0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    scheduler = make_scheduler(optimizer, ScheduleFactor("cosine", steps_per_epoch=3, epochs=2, warmup_epochs=0.5))
    return model, optimizer, scheduler


@pytest.mark.slow
def test_a_checkpoint_of_an_adapted_run_with_a_schedule_resumes_exactly():
    model, optimizer, scheduler = _adapted_run()
    _train_steps(model, optimizer, scheduler, 3, seed=1)
    state = checkpoint_state(model, optimizer, None, 1, [{"epoch": 1}], {}, scheduler=scheduler)
    expected = _train_steps(model, optimizer, scheduler, 3, seed=2)
    expected_lr = optimizer.param_groups[0]["lr"]

    model, optimizer, scheduler = _adapted_run()
    checkpoint = Checkpoint(**{k: state[k] for k in Checkpoint.__dataclass_fields__ if k in state})
    restore(checkpoint, model, optimizer, None, "checkpoint.pt", scheduler)
    assert _train_steps(model, optimizer, scheduler, 3, seed=2) == expected
    assert optimizer.param_groups[0]["lr"] == expected_lr


# --- end to end ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_lora_run_of_a_timm_model_writes_a_merged_model_pt(tmp_path):
    config = tiny_config("model.name=timm/test_vit", "adapt=lora", "adapt.rank=2", "save_model=true",
                         "data.num_train=64", "data.num_test=32", "optim.layer_decay=0.8")
    record = run_training(config, tmp_path)
    assert record["status"] == "completed", record.get("error")
    assert record["adapt"]["name"] == "lora" and record["adapt"]["adapted_modules"] == 24
    assert record["params_trainable"] < record["params_total"] / 2
    # the head's first; the stem (stage 0: patch embedding, tokens) has nothing trainable under LoRA
    assert [group["stage"] for group in record["param_groups"]] == list(range(7, 0, -1))
    assert record["param_groups"][0]["lr"] == config.optim.lr
    assert record["param_groups"][1]["lr"] == pytest.approx(0.8 * config.optim.lr)
    assert [entry["lr"] for entry in record["history"]] == [config.optim.lr]
    plain = timm.create_model("test_vit", num_classes=10, img_size=32)
    plain.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True), strict=True)


@pytest.mark.slow
def test_a_bitfit_run_of_a_torchvision_model(tmp_path):
    config = tiny_config("model=resnet18", "adapt=bitfit", "freeze=early", "save_model=true",
                         "data.num_train=64", "data.num_test=32")
    record = run_training(config, tmp_path)
    assert record["status"] == "completed", record.get("error")
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    assert record["params_trainable"] == sum(p.numel() for n, p in model.named_parameters()
                                             if n.startswith("fc.") or (not n.startswith(("layer1.", "layer2."))
                                                                       and ("bn" in n or "downsample.1" in n
                                                                            or n.endswith("bias"))))
    model.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True), strict=True)


@pytest.mark.slow
def test_a_stopped_lora_run_with_a_schedule_resumes_to_what_an_uninterrupted_one_ends_with(tmp_path):
    from helpers import At, interrupt

    from transferlab.checkpoint import CHECKPOINT_FILE, load_checkpoint
    from transferlab.errors import RunInterrupted

    run = ("model.name=timm/test_vit", "adapt=lora", "adapt.rank=2", "adapt.dropout=0.1", "save_model=true",
           "data.num_train=64", "data.num_test=32", "train.epochs=3", "optim.schedule=cosine",
           "optim.warmup_epochs=1", "optim.layer_decay=0.8", "deterministic=true")
    whole = run_training(tiny_config(*run), tmp_path / "whole")
    assert whole["status"] == "completed", whole.get("error")
    with pytest.raises(RunInterrupted):  # in epoch 2, after its first batch (dropout drew, the scheduler stepped)
        run_training(tiny_config(*run), tmp_path / "stopped", callbacks=[At(2, 1, interrupt)])
    assert load_checkpoint(tmp_path / "stopped" / CHECKPOINT_FILE).scheduler["last_epoch"] == 2  # 2 batches
    resumed = run_training(tiny_config(*run), tmp_path / "stopped")
    assert resumed["status"] == "completed" and resumed["resumed_after_epoch"] == 1
    keys = ("train_loss", "test_loss", "test_acc", "lr")
    assert [[e[k] for k in keys] for e in resumed["history"]] == [[e[k] for k in keys] for e in whole["history"]]
    assert whole["history"][0]["lr"] == 0.5 * config_lr() and whole["history"][1]["lr"] == config_lr()
    a, b = (torch.load(tmp_path / name / "model.pt", weights_only=True) for name in ("whole", "stopped"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def config_lr() -> float:
    return tiny_config().optim.lr


def test_the_configs_adapters_and_schedules_are_the_code_tables():
    from transferlab import config, schedules

    assert config.ADAPTERS == tuple(adapt.ADAPTERS) and config.SCHEDULES == schedules.SCHEDULES
