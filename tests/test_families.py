"""Every registered family, followed from the registry: a new family is tested without a new test."""
import dataclasses

import optuna
import pytest
import torch

from search_spaces import FAMILIES, get_family
from trainables.config import TrialConfig

SPECS = [(name, arch) for name, fam in FAMILIES.items() for arch in fam.ARCHS]


@pytest.mark.parametrize("name", FAMILIES)
def test_space_yields_valid_trial_configs(name):
    family = FAMILIES[name]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        cfg = TrialConfig.from_dict(family.space(study.ask()))
        assert cfg.family == name and cfg.arch in family.ARCHS
        assert cfg.lr > 0 and cfg.batch_size > 0 and 0 <= cfg.sampler_power <= 1 and 0 <= cfg.aug_strength <= 1


@pytest.mark.parametrize("name", FAMILIES)
def test_arch_can_be_pinned(name):
    family = FAMILIES[name]
    study = optuna.create_study()
    for arch in family.ARCHS:
        trial = study.ask()
        assert family.space(trial, arch=arch)["arch"] == arch
        assert "arch" not in trial.params


def test_unknown_config_keys_are_rejected():
    with pytest.raises(ValueError, match="unknown trial config keys.*'learning_rate'"):
        TrialConfig.from_dict({"family": "scratch", "arch": "simple_cnn", "learning_rate": 1e-3})


def test_unknown_family_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown family 'nope'.*scratch"):
        get_family("nope")


@pytest.mark.parametrize("name,arch", SPECS)
def test_every_arch_builds_and_trains_on_cpu(name, arch):
    cfg = dataclasses.replace(TrialConfig(family=name, arch=arch), width=0.25)
    model = FAMILIES[name].build_model(cfg, num_classes=5, image_size=32)
    x = torch.randn(4, 3, 32, 32)
    out = model(x)
    assert out.shape == (4, 5)
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
