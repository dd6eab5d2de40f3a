"""The offline pretrained path: weights a test saves come back through timm with a new head and
resized position embeddings; a missing file is a clear error, never a silent random init."""

import pytest
import timm
import torch
from safetensors.torch import save_file

from search_spaces import FAMILIES
from trainables.pretrained import Weights, WeightsError

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def saved_vit(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(1)
    src = timm.create_model("test_vit", pretrained=False)  # 1000 classes at its native input size
    save_file(src.state_dict(), root / "test_vit.safetensors")
    return root, src.state_dict()


def test_backbone_equals_saved_weights_head_is_new_and_pos_embed_resized(saved_vit):
    root, saved = saved_vit
    cfg = FAMILIES["transformers"].config("test_vit")
    model = cfg.family.build(cfg, num_classes=4, image_size=64, weights=Weights("timm", str(root)))
    loaded = model.state_dict()
    assert model.get_classifier().out_features == 4
    assert loaded["pos_embed"].shape != saved["pos_embed"].shape  # resampled for 64 px
    backbone = [k for k in loaded if not k.startswith("head.") and k != "pos_embed"]
    assert backbone and all(torch.equal(loaded[k], saved[k]) for k in backbone)
    assert loaded["head.weight"].shape == (4, saved["head.weight"].shape[1])
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 4)


def test_random_init_differs_from_saved(saved_vit):
    root, saved = saved_vit
    fresh = Weights("none").create("test_vit", num_classes=4, img_size=64).state_dict()
    assert not torch.equal(fresh["blocks.0.attn.qkv.weight"], saved["blocks.0.attn.qkv.weight"])


def test_missing_weight_names_the_file_and_the_way_out(tmp_path):
    with pytest.raises(WeightsError) as e:
        Weights("timm", str(tmp_path)).create("vit_base_patch16_224.augreg_in21k", num_classes=3)
    msg = str(e.value)
    assert str(tmp_path / "vit_base_patch16_224.augreg_in21k.safetensors") in msg and "--pretrained none" in msg


def test_tune_refuses_to_start_without_the_weights(capsys, tmp_path, tiny_folder):
    import tune

    with pytest.raises(SystemExit) as e:
        tune.main(["--family", "cnn", "--data", str(tiny_folder), "--weights-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "resnet50.a1_in1k.safetensors" in err and "--pretrained none" in err
