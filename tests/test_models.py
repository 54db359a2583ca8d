"""Models: any timm name, local pretrained weights with a new head, clear errors without the network."""
import pytest
import torch

from engine.errors import UserError
from engine.models import build_model, data_config


def test_pretrained_path_loads_the_backbone_and_adapts_the_head(tmp_path):
    source = build_model("test_resnet", 10)
    torch.save({"model": source.state_dict()}, tmp_path / "w.pt")  # a checkpoint-style file
    model = build_model("test_resnet", 5, pretrained_path=str(tmp_path / "w.pt"))
    theirs, ours = source.state_dict(), model.state_dict()
    head = {k for k in ours if ours[k].shape != theirs[k].shape}
    assert head and all(ours[k].shape[0] == 5 for k in head)  # the classifier now has 5 classes
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if k not in head and "num_batches" not in k)


def test_weights_from_another_architecture_are_refused(tmp_path):
    torch.save(build_model("test_vit", 3).state_dict(), tmp_path / "vit.pt")
    with pytest.raises(UserError, match="does not fit model 'ResNet' outside its classifier"):
        build_model("test_resnet", 3, pretrained_path=str(tmp_path / "vit.pt"))
    with pytest.raises(UserError, match="not found"):
        build_model("test_resnet", 3, pretrained_path=str(tmp_path / "nope.pt"))


def test_only_the_classifier_may_differ_from_pretrained_weights(tmp_path):
    # a deeper sibling: every tensor of resnet18 is in resnet34's file, with its shape, but not the reverse
    torch.save(build_model("resnet34", 1000).state_dict(), tmp_path / "deeper.pt")
    with pytest.raises(UserError, match=r"outside its classifier \(\d+ tensors: layer1\.2\..* not in this model"):
        build_model("resnet18", 3, pretrained_path=str(tmp_path / "deeper.pt"))
    source = build_model("test_resnet", 4).state_dict()
    first = next(iter(source))
    torch.save(dict(source, **{first: torch.zeros(3, 3)}), tmp_path / "wrong.pt")  # a backbone tensor of another shape
    with pytest.raises(UserError, match=rf"{first} \[3, 3\] there vs \[.*\] here"):
        build_model("test_resnet", 4, pretrained_path=str(tmp_path / "wrong.pt"))
    torch.save(source, tmp_path / "same.pt")  # everything fits: the file's own head is kept, not replaced
    model = build_model("test_resnet", 4, pretrained_path=str(tmp_path / "same.pt"))
    assert all(torch.equal(model.state_dict()[k], source[k]) for k in source)


def test_init_head_imagenet_without_pretrained_weights_warns(capsys):
    from engine.models import model_from_recipe
    from engine.recipe import load_recipe
    model_from_recipe(load_recipe(None, dict(model="test_resnet", init_head="imagenet")), ["a", "b"])
    assert "warning: init_head='imagenet'" in capsys.readouterr().out


def test_pretrained_without_the_network_says_what_to_do(monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import: else 45 s of retries
    with pytest.raises(UserError) as e:
        build_model("test_resnet", 3, pretrained=True)
    assert "set pretrained_path to a local weights file or pretrained=False" in str(e.value)


def test_unknown_model_names_similar_ones():
    with pytest.raises(UserError, match="unknown timm model 'resnett18'.*resnet"):
        build_model("resnett18", 3)


def test_drop_path_reaches_the_model_and_data_config_has_the_model_norm():
    model = build_model("test_convnext", 3, drop_path=0.2)
    rates = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.2)
    cfg = data_config(model)
    assert len(cfg["mean"]) == 3 and 0 < cfg["crop_pct"] <= 1


def test_input_size_check_computes_on_shapes_only_and_still_refuses_a_wrong_size():
    from engine.input_size import check_input_size
    vit = build_model("test_vit", 3)  # a ViT takes only multiples of its patch size
    seen = []
    vit.patch_embed.register_forward_pre_hook(lambda m, args: seen.append(args[0].device.type))
    check_input_size(vit, "test_vit", vit.pretrained_cfg["input_size"][-1])
    assert seen == ["meta"]  # no real pixels went through: EVA02-L at 448 px would take seconds on a CPU
    with pytest.raises(UserError, match=r"cannot take image_size=100 \(Input height \(100\) should be divisible by patch size"):
        check_input_size(vit, "test_vit", 100)
    assert vit.training  # the model is left in the mode it came in


def test_input_size_check_falls_back_to_a_real_pass_when_an_op_cannot_run_on_meta():
    from engine.input_size import check_input_size

    class ReadsAValue(torch.nn.Module):  # .item() needs real data: meta tensors have none
        def forward(self, x):
            return x * float(x.mean().item() + 1)

    check_input_size(ReadsAValue(), "reads-a-value", 8)  # no error: the real pass ran and fits
