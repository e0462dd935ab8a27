"""LoRA, AdaLoRA, Prefix tuning and IA3 through peft, each with a self-checking settings class.

crossrec wraps peft and re-implements none of these methods. Every method uses
``TaskType.FEATURE_EXTRACTION``: the backbone is an encoder of item text, not a classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import nn

from crossrec_cli.errors import CrossrecError

PEFT_METHODS = ("lora", "adalora", "prefix", "ia3")
TASK = "FEATURE_EXTRACTION"  # the backbone encodes item text; it is not a classifier
_PEFT_TYPES = {"LORA": "lora", "ADALORA": "adalora", "PREFIX_TUNING": "prefix", "IA3": "ia3"}

# Backbone families by module naming; `target_modules: auto` picks from these tables.
BERT_LIKE = {"bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie", "data2vec-text"}
LLAMA_LIKE = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3"}
_LORA_AUTO = {
    "bert": ["query", "key", "value", "dense"],  # every linear layer of the encoder blocks
    "mpnet": ["q", "k", "v", "o", "dense"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
# IA3 (Liu et al. 2022) rescales keys, values and the input of the second feed-forward linear.
# Regexes: "output.dense" alone would also match BERT's attention output projection.
_FF = r".*\.layer\.\d+\.output\.dense"
_IA3_AUTO = {
    "bert": (rf".*\.self\.(key|value)|{_FF}", _FF),
    "mpnet": (rf".*\.attn\.(k|v)|{_FF}", _FF),
    "llama": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
}
FAMILIES = {**dict.fromkeys(BERT_LIKE, "bert"), **dict.fromkeys(LLAMA_LIKE, "llama"), "mpnet": "mpnet"}


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_names(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(m, str) for m in v)


RULES = {  # rule -> (test, what a good value is)
    "count": (lambda v: _is_num(v) and isinstance(v, int) and v > 0, "a positive integer"),
    "positive": (lambda v: _is_num(v) and v > 0, "a positive number"),
    "nonnegative": (lambda v: _is_num(v) and v >= 0, "a number >= 0"),
    "share": (lambda v: _is_num(v) and 0 <= v < 1, "a number in [0, 1)"),
    "flag": (lambda v: isinstance(v, bool), "true or false"),
    "modules": (lambda v: v == "auto" or _is_names(v), "'auto' or a list of module names"),
}
_TYPE_RULES = {"int": "count", "bool": "flag"}  # fields of these types need no named rule


def need(ok: bool, key: str, problem: str, hint: str = "") -> None:
    if not ok:
        raise CrossrecError(f"adapter.{key}", problem, hint)


def plain(value: Any) -> Any:
    """OmegaConf ListConfig (any non-string sequence) -> list; other values unchanged."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [plain(v) for v in value]
    return value


def settings_from(cls: Any, method: str, hparams: dict[str, Any], rules: dict = RULES) -> Any:
    """Config keys -> a settings dataclass; an unknown key or a bad value is a CrossrecError."""
    known = [f.name for f in fields(cls)]
    for key in hparams:
        need(key in known, key, f"unknown key for adapter {method!r}", "known: " + ", ".join(known))
    settings = cls(**{k: plain(v) for k, v in hparams.items()})
    for f in fields(cls):  # ints, bools and *_modules follow from the field; floats are named
        modules = "modules" if f.name.endswith("_modules") else ""
        rule = cls.rules.get(f.name) or _TYPE_RULES.get(str(f.type)) or modules
        test, what = rules[rule]
        value = getattr(settings, f.name)
        need(test(value), f.name, f"must be {what}, got {value!r}")
    if hasattr(settings, "check"):
        settings.check()  # rules between fields
    return settings


def family(model_type: str) -> str:
    """'bert', 'mpnet' or 'llama' (module naming of the backbone); '' when unknown."""
    return FAMILIES.get(model_type, "")


def _auto(table: dict[str, Any], model_type: str) -> Any:
    hint = "list the module names, e.g. target_modules: [q_proj, v_proj]"
    need(family(model_type) in table, "target_modules", f"no auto choice for {model_type!r}", hint)
    return table[family(model_type)]


def _targets(settings: Any, table: dict[str, Any], model_type: str) -> list[str]:
    t = settings.target_modules
    return list(_auto(table, model_type) if t == "auto" else t)


class PeftMethod:
    """What differs between peft methods beyond their settings: each settings class below
    overrides what its method does differently (the defaults fit LoRA and IA3)."""

    mergeable: ClassVar[bool] = True  # peft's merge_and_unload folds its weights into the backbone
    one_at_a_time: ClassVar[str | None] = None  # why named adapters cannot all train, if so
    added_frozen: ClassVar[bool] = True  # peft adds a further adapter frozen: make it trainable

    def wrapped(self, base: nn.Module) -> None:
        """After peft wrapped (or added to) ``base``, the backbone inside."""

    def adding(self, model: Any) -> None:
        """Before ``model.add_adapter`` adds another adapter of this method."""

    def added(self, model: Any, name: str, config: Any) -> None:
        """After ``model.add_adapter(name, config)``."""

    @staticmethod
    def step(model: Any, step: int) -> None:
        """After each optimiser step, before zero_grad."""

    @staticmethod
    def loss(model: Any) -> torch.Tensor | None:
        """An auxiliary loss the recipe adds to its own, or None."""
        return None


@dataclass(frozen=True)
class LoraSettings(PeftMethod):
    """LoRA (Hu et al. 2021): a low-rank update B @ A beside each target linear layer."""

    rules: ClassVar[dict[str, str]] = {"dropout": "share"}
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: Any = "auto"

    def to_peft(self, model_type: str, total_steps: int | None) -> Any:
        from peft import LoraConfig

        targets = _targets(self, _LORA_AUTO, model_type)
        return LoraConfig(
            task_type=TASK,
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=targets,
        )


@dataclass(frozen=True)
class AdaLoraSettings(PeftMethod):
    """AdaLoRA (Zhang et al. 2023): SVD-form LoRA, ranks pruned to a budget while training."""

    one_at_a_time: ClassVar[str | None] = "peft trains one AdaLoRA adapter at a time"

    rules: ClassVar[dict[str, str]] = {"orth_reg_weight": "nonnegative"}
    rules |= dict.fromkeys(["dropout", "tinit_frac", "tfinal_frac", "beta1", "beta2"], "share")
    init_r: int = 12
    target_r: int = 4  # average rank per module after pruning
    alpha: int = 16
    dropout: float = 0.05
    tinit_frac: float = 0.1  # share of total_steps before pruning starts
    tfinal_frac: float = 0.2  # share of total_steps at the end, final ranks fixed
    delta_t: int = 10  # steps between two rank reallocations
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg_weight: float = 0.5
    target_modules: Any = "auto"

    def check(self) -> None:
        need(self.target_r <= self.init_r, "target_r", f"must be <= init_r ({self.init_r})")
        need(self.tinit_frac + self.tfinal_frac < 1, "tfinal_frac", "tinit_frac + tfinal_frac >= 1")

    def to_peft(self, model_type: str, total_steps: int | None) -> Any:
        from peft import AdaLoraConfig

        hint = "the training recipe passes total_steps (epochs x batches per epoch)"
        ok = isinstance(total_steps, int) and total_steps > 0
        need(ok, "total_steps", f"AdaLoRA needs the run's step count, got {total_steps!r}", hint)
        assert total_steps is not None
        tinit, tfinal = int(self.tinit_frac * total_steps), int(self.tfinal_frac * total_steps)
        hint = "train for more steps or lower tinit_frac / tfinal_frac"
        need(tinit < total_steps - tfinal, "total_steps", "no steps left for rank budgeting", hint)
        return AdaLoraConfig(
            task_type=TASK,
            init_r=self.init_r,
            target_r=self.target_r,
            beta1=self.beta1,
            beta2=self.beta2,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            orth_reg_weight=self.orth_reg_weight,
            total_step=total_steps,
            tinit=tinit,
            tfinal=tfinal,
            deltaT=self.delta_t,
            target_modules=_targets(self, _LORA_AUTO, model_type),
        )

    def adding(self, model: Any) -> None:
        # peft trains one AdaLoRA adapter at a time: freeze the earlier ones
        for old in model.peft_config.values():
            old.inference_mode = True
        model.base_model.set_requires_grad(list(model.peft_config), False)

    def added(self, model: Any, name: str, config: Any) -> None:
        from peft.tuners.adalora import RankAllocator

        tuner = model.base_model  # the rank allocator points at the new adapter
        tuner.trainable_adapter_name = name
        tuner.rankallocator = RankAllocator(tuner.model, config, name)

    @staticmethod
    def step(model: Any, step: int) -> None:
        adalora_step(model, step)  # ranks reallocated from the gradients

    @staticmethod
    def loss(model: Any) -> torch.Tensor | None:
        return adalora_orth_loss(model)


@dataclass(frozen=True)
class PrefixSettings(PeftMethod):
    """Prefix tuning (Li & Liang 2021): trained keys / values prepended in every layer."""

    mergeable: ClassVar[bool] = False  # merge_and_unload has no weights to fold: prefixes stay apart
    added_frozen: ClassVar[bool] = False
    rules: ClassVar[dict[str, str]] = {}
    num_virtual_tokens: int = 20
    projection: bool = False  # train the prefix through an MLP (Li & Liang's reparametrisation)
    projection_hidden: int = 128
    # peft feeds the prefix as a KV cache, so BERT-like encoders number the real tokens from
    # num_virtual_tokens on; true keeps the positions the backbone was pretrained with (0, 1, ...)
    keep_positions: bool = True

    def to_peft(self, model_type: str, total_steps: int | None) -> Any:
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(
            task_type=TASK,
            num_virtual_tokens=self.num_virtual_tokens,
            prefix_projection=self.projection,
            encoder_hidden_size=self.projection_hidden,
        )

    def wrapped(self, base: nn.Module) -> None:
        if self.keep_positions:
            _keep_positions(base)


@dataclass(frozen=True)
class IA3Settings(PeftMethod):
    """IA3 (Liu et al. 2022): learned rescaling of keys, values and feed-forward activations."""

    rules: ClassVar[dict[str, str]] = {}
    target_modules: Any = "auto"
    feedforward_modules: Any = "auto"  # a subset of target_modules

    def check(self) -> None:
        t, ff = self.target_modules, self.feedforward_modules
        ok = (t == ff == "auto") or (t != "auto" and ff != "auto" and set(ff) <= set(t))
        need(ok, "feedforward_modules", "must be a subset of target_modules (or both auto)")

    def to_peft(self, model_type: str, total_steps: int | None) -> Any:
        from peft import IA3Config

        t, ff = self.target_modules, self.feedforward_modules
        t, ff = _auto(_IA3_AUTO, model_type) if t == "auto" else (t, ff)
        return IA3Config(task_type=TASK, target_modules=t, feedforward_modules=ff)


SETTINGS = {"lora": LoraSettings, "adalora": AdaLoraSettings, "prefix": PrefixSettings}
SETTINGS["ia3"] = IA3Settings


def peft_config(model: nn.Module, method: str, hparams: dict, total_steps: int | None) -> Any:
    """Validated hparams -> (settings, peft config for ``model``, target modules resolved)."""
    settings = settings_from(SETTINGS[method], method, hparams)
    model_type = getattr(getattr(model, "config", None), "model_type", "")
    return settings, settings.to_peft(model_type, total_steps)


def method_of_peft(model: Any) -> str | None:
    """'lora' | 'adalora' | 'prefix' | 'ia3' for a peft model, else None."""
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, dict) or not configs:
        return None
    peft_type = next(iter(configs.values())).peft_type
    return _PEFT_TYPES.get(getattr(peft_type, "value", str(peft_type)))


def apply_peft(
    model: nn.Module, method: str, hparams: dict, total_steps: int | None, name: str
) -> nn.Module:
    """Wrap ``model`` in a peft model with one trainable adapter; the backbone is frozen."""
    from peft import get_peft_model

    settings, config = peft_config(model, method, hparams, total_steps)
    try:
        peft_model = get_peft_model(model, config, adapter_name=name)
    except ValueError as exc:  # peft's message for target modules the model lacks
        hint = "name modules the backbone has (model.named_modules())"
        raise CrossrecError("adapter.target_modules", str(exc).splitlines()[0], hint) from None
    settings.wrapped(peft_model.get_base_model())
    return peft_model


def add_peft(model: Any, method: str, name: str, hparams: dict, total_steps: int | None) -> None:
    """Add another trainable adapter of the same method; the active one does not change."""
    settings, config = peft_config(model.get_base_model(), method, hparams, total_steps)
    settings.adding(model)
    model.add_adapter(name, config)
    settings.added(model, name, config)
    if settings.added_frozen:
        model.base_model.set_requires_grad(name, True)  # peft adds inactive adapters frozen
    settings.wrapped(model.get_base_model())


def set_peft_active(model: Any, name: str) -> None:
    """Route the forward pass through adapter ``name``; which parameters train stays as it was."""
    # peft's set_adapter also makes only the active adapter trainable; one optimizer over every
    # domain's adapter needs them all trainable, so the flags are restored
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.set_adapter(name)
    for p, flag in flags:
        p.requires_grad_(flag)


def _keep_positions(base: nn.Module) -> None:
    """Number an encoder's real tokens from 0 under prefix tuning (peft passes a KV cache)."""
    import inspect

    emb, cfg = getattr(base, "embeddings", None), getattr(base, "config", None)
    if emb is None or cfg is None or cfg.is_decoder or cfg.is_encoder_decoder:
        return  # decoders: the prefix is a real past, shifted positions are right
    takes_length = "cache_length" in inspect.signature(emb.forward).parameters
    if takes_length and not getattr(emb, "_crossrec_from_zero", False):
        emb.register_forward_pre_hook(_positions_from_zero, with_kwargs=True)
        emb._crossrec_from_zero = True


def _positions_from_zero(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    kwargs["cache_length"] = 0
    return args, kwargs


def adalora_step(model: Any, step: int) -> None:
    """AdaLoRA rank reallocation by gradients: after ``optimizer.step()``, before ``zero_grad()``."""
    tuner = model.base_model
    name = tuner.trainable_adapter_name
    grads = [
        p.grad for n, p in tuner.model.named_parameters() if "lora_" in n and n.endswith(f".{name}")
    ]
    if all(g is None for g in grads):
        if len(model.peft_config) > 1:
            return  # the batch went through another domain's (frozen) adapter: nothing to rank by
        raise RuntimeError("AdaLoRA found no gradients: call adapter_step_hook before zero_grad()")
    tuner.update_and_allocate(step)


def adalora_orth_loss(model: Any) -> torch.Tensor:
    """AdaLoRA's orthogonality penalty on P and Q, a scalar. peft adds it to ``outputs.loss``
    only, which an encoder's output does not have, so the recipe adds it to its own loss."""
    tuner = model.base_model
    name = tuner.trainable_adapter_name
    terms = []
    for n, p in tuner.model.named_parameters():
        if n.endswith((f"lora_A.{name}", f"lora_B.{name}")):
            cov = p @ p.T if "lora_A" in n else p.T @ p
            eye = torch.eye(cov.shape[0], device=cov.device, dtype=cov.dtype)
            terms.append(torch.linalg.matrix_norm(cov - eye))
    weight = model.peft_config[name].orth_reg_weight
    return weight * torch.stack(terms).mean() if terms else torch.zeros(())
