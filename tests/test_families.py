"""Every registered family, followed from the registry: a new family is tested without a new test."""
import dataclasses

import optuna
import pytest
import torch

from search_spaces import ALL, FAMILIES, get_family, make_space
from trainables import data, engine
from trainables.config import TrialConfig
from trainables.pretrained import Weights

SPECS = [(name, arch) for name, fam in FAMILIES.items() for arch in {**fam.ARCHS, **fam.STANDINS}]
NO_WEIGHTS = Weights("none")


@pytest.mark.parametrize("standins", [False, True])
@pytest.mark.parametrize("name", FAMILIES)
def test_space_yields_valid_trial_configs(name, standins):
    family = FAMILIES[name]
    choices = (family.STANDINS or family.ARCHS) if standins else family.ARCHS
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        cfg = TrialConfig.from_dict(make_space(name, standins=standins)(study.ask())["trial"])
        assert cfg.family == name and cfg.arch in choices
        assert cfg.lr > 0 and cfg.batch_size > 0 and 0 <= cfg.sampler_power <= 1 and 0 <= cfg.aug_strength <= 1


@pytest.mark.parametrize("name", FAMILIES)
def test_arch_can_be_pinned(name):
    family = FAMILIES[name]
    study = optuna.create_study()
    for arch in {**family.ARCHS, **family.STANDINS}:
        trial = study.ask()
        assert family.space(trial, arch=arch)["arch"] == arch
        assert "arch" not in trial.params


def test_all_families_share_one_tpe_study():
    """Families give `arch` and `batch_size` different choices; `all` must not trip Optuna over that."""
    space = make_space(ALL, standins=True)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=4))
    for f in FAMILIES:
        study.enqueue_trial({"family": f})
    seen = set()
    for i in range(16):
        trial = study.ask()
        cfg = TrialConfig.from_dict(space(trial)["trial"])
        seen.add(cfg.family)
        study.tell(trial, float(i % 5))
    assert seen == set(FAMILIES)


@pytest.mark.parametrize("name", FAMILIES)
def test_family_declares_its_budget_weights_and_augmentation(name):
    family = FAMILIES[name]
    assert family.AUGMENT in data.RECIPES and family.IMAGE_SIZE > 0 and family.GRACE_EPOCHS >= 1
    assert isinstance(family.PRETRAINED, bool)
    transform = data.build_transform(32, True, 1.0, family.AUGMENT)
    assert transform(torch.randint(0, 255, (3, 50, 40), dtype=torch.uint8)).shape == (3, 32, 32)


def test_unknown_config_keys_are_rejected():
    with pytest.raises(ValueError, match="unknown trial config keys.*'learning_rate'"):
        TrialConfig.from_dict({"family": "scratch", "arch": "simple_cnn", "learning_rate": 1e-3})


def test_unknown_family_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown family 'nope'.*scratch.*all"):
        get_family("nope")


@pytest.mark.parametrize("name,arch", SPECS)
def test_every_arch_builds_and_trains_on_cpu(name, arch):
    cfg = dataclasses.replace(TrialConfig(family=name, arch=arch), width=0.25)
    model = FAMILIES[name].build_model(cfg, num_classes=5, image_size=64, weights=NO_WEIGHTS)
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 5)
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_hybrid_matches_seed_003_shapes():
    cfg = TrialConfig(family="hybrid", arch="resnet50_bigru")
    model = FAMILIES["hybrid"].build_model(cfg, num_classes=27, image_size=224, weights=NO_WEIGHTS).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        fmap = model.backbone.forward_features(x)
        assert fmap.shape == (2, 2048, 7, 7)                        # ResNet-50 truncated at layer4
        assert model.proj(fmap).shape == (2, 320, 7, 7)             # 1x1 projection 2048 -> 320
        seq = model.proj(fmap).flatten(2).transpose(1, 2)
        assert model.rows(seq).shape == model.cols(seq).shape == (2, 512)   # mean + attention pooling
        assert model.pooled(x).shape == (2, 3072)                   # 2048 + 512 + 512
        assert model(x).shape == (2, 27)
    assert model.rows.gru.num_layers == 2 and model.rows.gru.bidirectional and model.rows is not model.cols


def test_frozen_backbone_keeps_its_weights_while_the_head_learns():
    model = FAMILIES["cnn"].build_model(TrialConfig(family="cnn", arch="test_resnet"), 3, 32, NO_WEIGHTS)
    opt = engine.make_optimizer(model, 1e-2, 0.01, backbone_lr_scale=0.1)
    sched = engine.make_scheduler(opt, steps_per_epoch=4, epochs=2, warmup_epochs=0)
    assert {g["lr_scale"] for g in opt.param_groups if not g["is_head"]} == {0.1}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    engine.set_backbone_frozen(opt, True)
    loader = [(torch.randn(4, 3, 32, 32), torch.randint(0, 3, (4,)))] * 3
    model.eval()  # keep BatchNorm statistics fixed so only the optimizer can change weights
    for x, y in loader:
        sched.step_update(0)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    after = model.state_dict()
    head = {n for n, _ in model.get_classifier().named_parameters()}
    for k in before:
        changed = not torch.equal(before[k], after[k])
        assert changed == (k.removeprefix("fc.") in head and k.startswith("fc.")), k
