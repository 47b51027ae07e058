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

from edgelmm.errors import BundleError, InputError, SpecError
from edgelmm.runtime.generate import Decoder, StreamCallback, token_loop
from edgelmm.runtime.manifest import Manifest, load_bundle, safe_path
from edgelmm.runtime.metrics import Metrics, peak_rss_mb
from edgelmm.runtime.preprocess import ImageInput, preprocess
from edgelmm.runtime.prompt import MAX_IMAGES_PER_PROMPT, Message, PromptBuilder, PromptIds
from edgelmm.runtime.sessions import GraphSession, SessionConfig, graph_errors, open_cpu_session
from edgelmm.runtime.tokenizer import Tokenizer
from edgelmm.specs import GenerationSpec, GraphRole

MAX_THREADS = 256  # intra-op threads per session; more is a typo, and each one is a real OS thread


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


def load_prompt_builder(root: Path, manifest: Manifest) -> PromptBuilder:
    """The bundle's tokenizer and chat template, cross-checked against the manifest (ids inside the model's vocab)."""
    tokenizer = Tokenizer(safe_path(root, manifest.text.tokenizer_file))
    text, vocab, name = manifest.text, manifest.model.vocab_size, manifest.text.tokenizer_file
    problems = []
    if tokenizer.vocab_size > vocab:
        problems.append(f"it has {tokenizer.vocab_size} tokens but the model's vocab_size is {vocab}")
    ids = {"eos_token_ids": text.eos_token_ids, "bos_token_id": (text.bos_token_id,),
           "pad_token_id": (text.pad_token_id,), "image_token_id": (text.image_token_id,)}
    problems += [f"text.{k} {i} is outside the vocab" for k, v in ids.items() for i in v if i is not None and
                 not 0 <= i < vocab]
    if text.image_token is not None and tokenizer.token_to_id(text.image_token) != text.image_token_id:
        problems.append(f"image_token {text.image_token!r:.30} is id {tokenizer.token_to_id(text.image_token)}, "
                        f"manifest says {text.image_token_id}")
    if problems:
        raise BundleError(f"tokenizer file '{name}' does not match the manifest: " + "; ".join(problems))
    prompts = PromptBuilder(text, tokenizer, has_vision=manifest.has_vision)
    try:  # the chat template must render a plain turn (in time): a broken one fails here, not at the first question
        prompts.build("Hello", 1 if manifest.has_vision else 0)
    except InputError:
        pass  # a template may refuse some conversation shapes (raise_exception): that is the caller's to fix
    return prompts


class Pipeline:
    """A loaded bundle. ``generate`` calls are serialised by a lock: one KV cache, one sequence at a time.

    Threads may share a pipeline: concurrent calls wait for each other and each gets the result it would have got
    alone. A stream callback must not call generate() on the same pipeline (refused with an InputError).
    """

    def __init__(self, root: Path, manifest: Manifest, sessions: dict[GraphRole, GraphSession], load_ms: float, *,
                 prompts: PromptBuilder | None = None) -> None:
        self.root = root
        self.manifest = manifest
        self.sessions = sessions
        self.load_ms = load_ms
        self.prompts = prompts or load_prompt_builder(root, manifest)
        self.tokenizer = self.prompts.tokenizer
        self.decoder = Decoder(sessions[GraphRole.DECODER].session, manifest.kv_cache, manifest.model.hidden_size)
        self._lock = threading.Lock()
        """Serialises generate(): one decoder KV cache per pipeline. Encode/embed calls need no lock (sessions are
        thread-safe); build one Pipeline per concurrent conversation for parallelism."""
        self._owner: int | None = None

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
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or not 0 <= threads <= MAX_THREADS):
            raise SpecError(
                f"threads must be an integer in [0, {MAX_THREADS}] (0: onnxruntime's default), got {threads!r:.20}")
        start = time.perf_counter()
        root = Path(bundle_dir)
        manifest = load_bundle(root, check_hashes=check_hashes)
        prompts = load_prompt_builder(root, manifest)  # tokenizer and chat template are checked before any session
        config = SessionConfig(intra_op_threads=threads or 0)
        sessions = {role: open_cpu_session(safe_path(root, g.file), config) for role, g in manifest.graphs.items()}
        return cls(root, manifest, sessions, (time.perf_counter() - start) * 1e3, prompts=prompts)

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
        with graph_errors(GraphRole.VISION_ENCODER):
            return session.run(["image_features"], {"pixel_values": pixels})[0]

    def embed(self, ids: np.ndarray) -> np.ndarray:
        """int64 ids [S] -> float32 inputs_embeds [1, S, hidden]."""
        session = self.sessions[GraphRole.TOKEN_EMBEDDING].session
        with graph_errors(GraphRole.TOKEN_EMBEDDING):
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
        if config is not None and not isinstance(config, GenerationSpec):
            raise SpecError(f"config must be a GenerationSpec, got {type(config).__name__}")
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
        if stream is not None and not callable(stream):
            raise InputError(f"stream must be a callable taking each new piece of text, got {type(stream).__name__}")
        if images is not None and (isinstance(images, str | bytes) or not isinstance(images, Sequence)):
            raise InputError(f"images must be a list, got {type(images).__name__}")
        images = list(images or [])
        if len(images) > MAX_IMAGES_PER_PROMPT:
            raise InputError(f"{len(images)} images given; the limit is {MAX_IMAGES_PER_PROMPT} per prompt")
        spec = self.generation_spec(config, max_new_tokens=max_new_tokens, **options)
        if self._owner == threading.get_ident():  # re-entry from a stream callback would deadlock on the lock
            raise InputError("generate() was called from its own stream callback; call it after the first returns")
        with self._lock:
            self._owner = threading.get_ident()
            try:
                return self._generate(prompt, images, spec, stream, chat)
            finally:
                self._owner = None

    def _generate(
        self, prompt: Any, images: list[ImageInput], spec: GenerationSpec, stream: StreamCallback | None, chat: bool
    ) -> Result:
        metrics = Metrics(load_ms=self.load_ms, images=len(images), providers=self.providers)
        t0 = time.perf_counter()
        ids = self.prompts.build(prompt, len(images), chat=chat)
        room = self.manifest.text.max_context - len(ids)
        features = None
        if images:
            t1 = time.perf_counter()
            features = self.encode_images(images)
            metrics.vision_ms = (time.perf_counter() - t1) * 1e3
        t2 = time.perf_counter()
        metrics.preprocess_ms = (t2 - t0) * 1e3 - metrics.vision_ms
        self.decoder.reset()
        first_logits = self.decoder.forward(self.prompt_embeds(ids, features))
        metrics.prefill_ms = (time.perf_counter() - t2) * 1e3

        def step(token: int) -> np.ndarray:
            return self.decoder.forward(self.embed(np.asarray([token], dtype=np.int64)))

        loop = token_loop(
            first_logits,
            step,
            spec=spec,
            max_new_tokens=min(spec.max_new_tokens, room),
            eos_ids=frozenset(self.manifest.text.eos_token_ids),
            prompt_ids=ids.ids,
            tokenizer=self.tokenizer,
            stream=stream,
        )
        metrics.ttft_ms = (loop.first_token_at - t0) * 1e3
        metrics.decode_ms = loop.decode_s * 1e3
        metrics.prompt_tokens = len(ids)
        metrics.generated_tokens = len(loop.token_ids)
        metrics.peak_rss_mb = peak_rss_mb()
        return Result(loop.text, loop.token_ids, metrics, loop.finish_reason, len(ids))
