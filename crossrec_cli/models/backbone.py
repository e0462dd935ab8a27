"""Build a backbone language model and its tokenizer: provisioned folder, hub id, or tiny config."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crossrec_cli.errors import CrossrecError
from crossrec_cli.registry import Registry

REPO_ROOT = Path(__file__).resolve().parents[2]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def models_dir() -> Path:
    """Where provisioned backbones live: $CROSSREC_MODELS or ``models/`` in the repository."""
    return Path(os.environ.get("CROSSREC_MODELS", REPO_ROOT / "models")).expanduser()


@dataclass
class Backbone:
    """A language model, its tokenizer and a string that identifies its weights (cache key)."""

    model: nn.Module
    tokenizer: Any
    hidden_size: int
    identity: str
    kind: str  # a key of KINDS
    source: str  # folder or hub id it came from ("config" for random ones)
    runtime: str = "torch"  # what encodes item texts while it is frozen: a key of runtimes.RUNTIMES


@dataclass(frozen=True)
class BackboneKind:
    """What ``backbone.kind`` means: the transformers Auto class that loads the model, and whether
    its last hidden states come from ``output_hidden_states`` (causal LM heads return logits)."""

    auto_class: str
    lm_head: bool

    def auto(self) -> Any:
        import transformers

        return getattr(transformers, self.auto_class)

    def hidden(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, T, H): the last layer's hidden states of ``model`` on a tokenised batch."""
        out = model(**batch, output_hidden_states=self.lm_head)
        return out.hidden_states[-1] if self.lm_head else out.last_hidden_state


# backbone.kind (``none``, no language model at all, never reaches this module)
KINDS: Registry[BackboneKind] = Registry("backbone kind", "backbone.kind")
KINDS.add("encoder", BackboneKind("AutoModel", lm_head=False))
KINDS.add("decoder", BackboneKind("AutoModelForCausalLM", lm_head=True))


def last_hidden(model: nn.Module, kind: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, T, H) hidden states of a ``kind`` backbone (or its adapted copy) on ``batch``."""
    return KINDS.get(kind).hidden(model, batch)


def byte_tokenizer() -> Any:
    """A download-free byte-level tokenizer (256 byte symbols + BERT specials) for tiny models."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIAL + alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
    )


def resolve_source(path: str | None, local: str | None) -> str:
    """A provisioned local folder when present, else ``path`` (a folder or a hub id)."""
    if path and Path(path).expanduser().is_dir():
        return str(Path(path).expanduser().resolve())
    if local and (models_dir() / local).is_dir():
        return str((models_dir() / local).resolve())
    if not path:
        raise CrossrecError("backbone.path", "no backbone folder or hub id", "set backbone.path or run `make install`")
    return path


def _identity_of_folder(folder: Path) -> str:
    parts = [str(folder)]
    for f in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) + sorted(folder.glob("*.gguf")):
        st = f.stat()
        parts.append(f"{f.name}:{st.st_size}:{int(st.st_mtime)}")
    return "|".join(parts)


def build_backbone(
    name: str,
    path: str | None = None,
    local: str | None = None,
    config: dict | None = None,
    kind: str = "encoder",
    seed: int = 0,
    trust_remote_code: bool = False,
    gguf_file: str | None = None,
    runtime: str = "torch",
) -> Backbone:
    """Encoder (``AutoModel``) or decoder (``AutoModelForCausalLM``) with its tokenizer.

    ``config`` builds a randomly initialised model (seeded) with a byte-level tokenizer, no
    download; otherwise ``path``/``local`` name a folder or hub id (see ``resolve_source``).
    ``runtime``: ``backbone.runtime`` (models/runtimes.py), what encodes item texts while frozen.
    """
    from transformers import AutoConfig, AutoTokenizer

    spec = KINDS.get(kind)
    auto = spec.auto()
    if config is not None:
        tokenizer = byte_tokenizer()
        cfg = dict(config)
        model_type = cfg.pop("model_type", "bert")
        cfg.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
        hf_cfg = AutoConfig.for_model(model_type, **cfg)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = auto.from_config(hf_cfg) if spec.lm_head else auto.from_config(hf_cfg, add_pooling_layer=False)
        ident = "config:" + json.dumps({"model_type": model_type, **cfg, "seed": seed}, sort_keys=True)
        return Backbone(model, tokenizer, hf_cfg.hidden_size, ident, kind, "config", runtime)
    source = resolve_source(path, local)
    cfg_file = Path(source) / "config.json"
    try:
        custom_code = cfg_file.is_file() and "auto_map" in json.loads(cfg_file.read_text())
    except ValueError:
        raise CrossrecError(str(cfg_file), "not valid JSON", "restore the model folder's config.json") from None
    if custom_code and not trust_remote_code:
        raise CrossrecError("backbone.trust_remote_code", f"{source} ships its own Python code (auto_map in config.json)",
                            "set backbone.trust_remote_code=true only for code you trust")
    # safetensors only: a folder holding just pytorch_model.bin (a pickle) is refused
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "use_safetensors": not gguf_file}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    if not spec.lm_head and _is_bert_like(source, trust_remote_code):
        kwargs["add_pooling_layer"] = False  # unused pooler breaks DDP and wastes memory
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the unused BERT pooler is dropped on purpose: no load report
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **({"gguf_file": gguf_file} if gguf_file else {}),
                                                  trust_remote_code=trust_remote_code)
        model = auto.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:  # ValueError: custom code refused without trust_remote_code
        raise CrossrecError(
            f"backbone {name}", f"cannot load {source!r}: {str(exc).splitlines()[0]}",
            "run `make install` to provision it, or set backbone.path to a local folder",
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    folder = Path(source)
    ident = _identity_of_folder(folder) if folder.is_dir() else f"hub:{source}"
    return Backbone(model, tokenizer, model.config.hidden_size, ident, kind, source, runtime)


def _is_bert_like(source: str, trust_remote_code: bool) -> bool:
    from transformers import AutoConfig

    try:
        mt = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code).model_type
    except OSError:
        return False
    return mt in ("bert", "roberta", "xlm-roberta", "camembert")


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def resolve_device(want: str) -> torch.device:
    """``device=auto|cpu|cuda|cuda:N`` -> a torch device; auto picks cuda when a GPU is visible.
    A GPU that is asked for but not visible is a one-line CrossrecError, not a later traceback."""
    if want == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if want.startswith("cuda"):
        index = int(want.partition(":")[2] or 0)
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise CrossrecError("device", f"{want} requested but {torch.cuda.device_count()} GPU(s) are visible",
                                "use device=cpu or device=auto")
    return torch.device(want)
