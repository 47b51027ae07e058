"""Pipeline: load a bundle, answer prompts about images. onnxruntime + numpy + Pillow + tokenizers only.

    from edgelmm.runtime import Pipeline
    pipe = Pipeline.load("bundles/smol-vqa")
    res = pipe.generate("What colour is the circle?", images=["scene.png"], max_new_tokens=16)
    print(res.text, res.metrics.ttft_ms)
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgelmm.errors import InputError, SpecError
from edgelmm.runtime.decoding import BoundEmbedding, open_decoder
from edgelmm.runtime.generate import StreamCallback, token_loop
from edgelmm.runtime.manifest import Manifest, load_bundle, safe_path
from edgelmm.runtime.metrics import Metrics, peak_rss_mb
from edgelmm.runtime.preprocess import ImageInput, preprocess
from edgelmm.runtime.prompt import Message, PromptBuilder, PromptIds
from edgelmm.runtime.sessions import GraphSession, SessionConfig, open_cpu_session
from edgelmm.runtime.tokenizer import Tokenizer
from edgelmm.specs import GenerationSpec, GraphRole

MAX_IMAGES_PER_PROMPT = 16


@dataclasses.dataclass(slots=True)
class Result:
    """What generate() returns."""

    text: str
    token_ids: list[int]
    """Generated ids, the eos id included when generation ended on it (as transformers' generate)."""
    metrics: Metrics
    finish_reason: str
    prompt_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "token_ids": self.token_ids,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "metrics": self.metrics.to_dict(),
        }


class Pipeline:
    """A loaded bundle. ``generate`` calls are serialised by a lock: one KV cache, one sequence at a time."""

    def __init__(self, root: Path, manifest: Manifest, sessions: dict[GraphRole, GraphSession], load_ms: float) -> None:
        self.root = root
        self.manifest = manifest
        self.sessions = sessions
        self.load_ms = load_ms
        self.tokenizer = Tokenizer(safe_path(root, manifest.text.tokenizer_file))
        self.prompts = PromptBuilder(manifest.text, self.tokenizer, has_vision=manifest.has_vision)
        hidden = manifest.model.hidden_size
        self.decoder = open_decoder(sessions[GraphRole.DECODER].session, manifest.kv_cache, hidden)
        self._embed_token = BoundEmbedding(sessions[GraphRole.TOKEN_EMBEDDING].session, hidden)
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        bundle_dir: str | os.PathLike[str],
        profile: Any = None,
        *,
        threads: int | None = None,
        check_hashes: bool = True,
    ) -> Pipeline:
        """Verify the bundle (schema, files, sizes, sha256) and only then create one session per graph.

        ``threads``: intra-op threads per session (None: onnxruntime's default). ``profile`` is reserved for
        device profiles and must be None until they are supported by this runtime.
        """
        if profile is not None:
            raise SpecError("device profiles are not supported by this runtime yet; pass profile=None")
        start = time.perf_counter()
        root = Path(bundle_dir)
        manifest = load_bundle(root, check_hashes=check_hashes)
        config = SessionConfig(intra_op_threads=threads or 0)
        sessions = {role: open_cpu_session(safe_path(root, g.file), config) for role, g in manifest.graphs.items()}
        return cls(root, manifest, sessions, (time.perf_counter() - start) * 1e3)

    @property
    def providers(self) -> dict[str, str]:
        return {str(role): s.provider for role, s in self.sessions.items()}

    # -- graph calls ------------------------------------------------------------------------------------------

    def encode_images(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Images -> float32 [N, num_image_tokens, hidden]: tower + connector, already in LM embedding space."""
        if not self.manifest.has_vision:
            raise InputError("this bundle has no vision encoder")
        pixels = preprocess(list(images), self.manifest.preprocess)
        session = self.sessions[GraphRole.VISION_ENCODER].session
        return session.run(["image_features"], {"pixel_values": pixels})[0]

    def embed(self, ids: np.ndarray) -> np.ndarray:
        """int64 ids [S] -> float32 inputs_embeds [1, S, hidden]."""
        session = self.sessions[GraphRole.TOKEN_EMBEDDING].session
        return session.run(["inputs_embeds"], {"input_ids": np.asarray(ids, dtype=np.int64)[None]})[0]

    def prompt_embeds(self, prompt: PromptIds, features: np.ndarray | None) -> np.ndarray:
        """Token embeddings with each image's visual features written into its slots: float32 [1, S, hidden]."""
        embeds = self.embed(prompt.ids)
        for i, (start, length) in enumerate(prompt.image_slots):
            embeds[0, start : start + length] = features[i]
        return embeds

    # -- generation -------------------------------------------------------------------------------------------

    def generation_spec(self, config: GenerationSpec | None = None, **options: Any) -> GenerationSpec:
        """The bundle's default generation settings, overridden by ``config`` and then by keyword options."""
        spec = config or self.manifest.generation
        options = {k: v for k, v in options.items() if v is not None}
        if "stop" in options and isinstance(options["stop"], str):
            options["stop"] = (options["stop"],)
        try:
            return dataclasses.replace(spec, **options) if options else spec
        except TypeError as exc:
            valid = ", ".join(f.name for f in dataclasses.fields(GenerationSpec))
            raise SpecError(f"unknown generation option ({exc}); valid: {valid}") from None

    def generate(
        self,
        prompt: str | Sequence[Message],
        images: Sequence[ImageInput] | None = None,
        *,
        max_new_tokens: int | None = None,
        stream: StreamCallback | None = None,
        config: GenerationSpec | None = None,
        chat: bool = True,
        **options: Any,
    ) -> Result:
        """Answer ``prompt`` about ``images``; greedy unless temperature > 0 (see GenerationSpec for options)."""
        images = list(images or [])
        if len(images) > MAX_IMAGES_PER_PROMPT:
            raise InputError(f"{len(images)} images given; the limit is {MAX_IMAGES_PER_PROMPT} per prompt")
        spec = self.generation_spec(config, max_new_tokens=max_new_tokens, **options)
        with self._lock:
            return self._generate(prompt, images, spec, stream, chat)

    def generate_ids(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int | None = None,
        ignore_eos: bool = False,
        config: GenerationSpec | None = None,
        **options: Any,
    ) -> Result:
        """Continue raw token ids (no template, no images): benchmarks and evaluations feed exact ids this way.

        ``ignore_eos`` keeps generating through end-of-sequence ids (a fixed number of new tokens).
        """
        ids = np.asarray(prompt_ids, dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0:
            raise InputError("prompt_ids must be a non-empty 1-D sequence of token ids")
        if ids.min() < 0 or ids.max() >= self.manifest.model.vocab_size:
            raise InputError(f"prompt_ids must be in [0, {self.manifest.model.vocab_size})")
        if ids.size >= self.manifest.text.max_context:
            raise InputError(f"prompt is {ids.size} tokens; the bundle's max context is {self.manifest.text.max_context}")
        spec = self.generation_spec(config, max_new_tokens=max_new_tokens, **options)
        eos = frozenset() if ignore_eos else frozenset(self.manifest.text.eos_token_ids)
        with self._lock:
            metrics = Metrics(load_ms=self.load_ms, providers=self.providers)
            t0 = time.perf_counter()
            return self._decode(ids, lambda: self.embed(ids), spec, None, metrics, t0, eos)

    def _generate(
        self, prompt: Any, images: list[ImageInput], spec: GenerationSpec, stream: StreamCallback | None, chat: bool
    ) -> Result:
        metrics = Metrics(load_ms=self.load_ms, images=len(images), providers=self.providers)
        t0 = time.perf_counter()
        ids = self.prompts.build(prompt, len(images), chat=chat)
        features = None
        if images:
            t1 = time.perf_counter()
            features = self.encode_images(images)
            metrics.vision_ms = (time.perf_counter() - t1) * 1e3
        metrics.preprocess_ms = (time.perf_counter() - t0) * 1e3 - metrics.vision_ms
        eos = frozenset(self.manifest.text.eos_token_ids)
        return self._decode(ids.ids, lambda: self.prompt_embeds(ids, features), spec, stream, metrics, t0, eos)

    def _decode(self, ids: np.ndarray, prompt_embeds: Any, spec: GenerationSpec, stream: StreamCallback | None,
                metrics: Metrics, t0: float, eos_ids: frozenset[int]) -> Result:
        """Prefill ``prompt_embeds()`` then generate; ``t0`` is when the call started (TTFT's origin)."""
        max_new = min(spec.max_new_tokens, self.manifest.text.max_context - len(ids))
        t2 = time.perf_counter()
        self.decoder.reset()
        self.decoder.reserve(len(ids) + max_new)
        first_logits = self.decoder.forward(prompt_embeds())
        metrics.prefill_ms = (time.perf_counter() - t2) * 1e3

        def step(token: int) -> np.ndarray:
            return self.decoder.forward(self._embed_token(token))

        loop = token_loop(
            first_logits,
            step,
            spec=spec,
            max_new_tokens=max_new,
            eos_ids=eos_ids,
            prompt_ids=ids,
            tokenizer=self.tokenizer,
            stream=stream,
        )
        metrics.ttft_ms = (loop.first_token_at - t0) * 1e3
        metrics.decode_ms = loop.decode_s * 1e3
        metrics.prompt_tokens = len(ids)
        metrics.generated_tokens = len(loop.token_ids)
        metrics.peak_rss_mb = peak_rss_mb()
        return Result(loop.text, loop.token_ids, metrics, loop.finish_reason, len(ids))
