"""Pipeline: load a bundle, answer prompts about images. onnxruntime + numpy + Pillow + tokenizers only.

    from edgelmm.runtime import Pipeline
    pipe = Pipeline.load("bundles/smol-vqa")                      # CPU, onnxruntime's defaults
    pipe = Pipeline.load("bundles/smol-vqa", profile="pixel-8")   # a device profile (device_profiles/)
    res = pipe.generate("What colour is the circle?", images=["scene.png"], max_new_tokens=16)
    print(res.text, res.metrics.ttft_ms, res.metrics.providers)
    pipe = Pipeline.load("bundles/smol-ilm")                      # an Item-Language Model bundle
    res = pipe.generate("I watched <item> The Iron Bridge. What next?", items=[17])
    logp = pipe.score("I watched <item> The Iron Bridge. What next?", ["Red Harbour", "The Long Road"], items=[17])
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgelmm.errors import BundleError, InputError, SpecError
from edgelmm.runtime.constraint import Choice, ChoiceTrie, choice_loop
from edgelmm.runtime.decoding import BoundEmbedding, open_decoder
from edgelmm.runtime.generate import StreamCallback, token_loop
from edgelmm.runtime.items import check_item_ids, read_table
from edgelmm.runtime.bundle_files import safe_path, verify_files, verify_graphs
from edgelmm.runtime.manifest import Manifest
from edgelmm.runtime.metrics import Metrics, peak_rss_mb
from edgelmm.runtime.plan import LoadPlan, plan_load
from edgelmm.runtime.positions import prompt_positions
from edgelmm.runtime.preprocess import ImageInput, ImageTiles, prepare
from edgelmm.runtime.profile import DeviceProfile, ProviderSpec, load_profile
from edgelmm.runtime.prompt import MAX_IMAGES_PER_PROMPT, Message, PromptBuilder, PromptIds
from edgelmm.runtime.scoring import score_continuations
from edgelmm.runtime.sessions import GraphSession, SessionConfig, graph_errors, open_session
from edgelmm.runtime.tokenizer import Tokenizer
from edgelmm.specs import GenerationSpec, GraphRole

MAX_THREADS = 256  # intra-op threads per session; more is a typo, and each one is a real OS thread
log = logging.getLogger("edgelmm.runtime")
_WARNED: set[str] = set()  # provider-fallback warnings already logged in this process


@dataclasses.dataclass(slots=True)
class Result:
    """What generate() returns."""

    text: str
    token_ids: list[int]
    """Generated ids, the eos id included when generation ended on it (as transformers' generate)."""
    metrics: Metrics
    finish_reason: str
    """"eos", "stop" (a stop string), "length", or "choice" (a constrained generation completed its option)."""
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

    def __init__(self, root: Path, manifest: Manifest, sessions: dict[GraphRole, GraphSession], load_ms: float,
                 plan: LoadPlan | None = None, *, prompts: PromptBuilder | None = None) -> None:
        self.root = root
        self.manifest = manifest
        self.sessions = sessions
        self.load_ms = load_ms
        self.plan = plan
        """The variant, memory estimate and profile this pipeline was loaded with (None: built by hand)."""
        self.profile: DeviceProfile | None = plan.profile if plan else None
        self.max_context = plan.context if plan else manifest.text.max_context
        """Prompt + generated tokens: the bundle's max context, lowered by the profile's."""
        self.prefill_chunk = self.profile.prefill_chunk if self.profile else 0
        """Prompt tokens per decoder call (0: the whole prompt in one call)."""
        self.prompts = prompts or load_prompt_builder(root, manifest)
        self.tokenizer = self.prompts.tokenizer
        hidden = manifest.model.hidden_size
        self.decoder = open_decoder(sessions[GraphRole.DECODER].session, manifest.kv_cache, hidden,
                                    manifest.positions.rows)
        self._embed_token = BoundEmbedding(sessions[GraphRole.TOKEN_EMBEDDING].session, hidden)
        items = manifest.items
        self.item_table = read_table(safe_path(root, items.table_file), rows=items.num_items, dim=items.cf_dim) \
            if items is not None else None
        """float32 [num_items, cf_dim]: the CF table (item bundles only; verified with the bundle's files)."""
        self._lock = threading.Lock()
        """Serialises generate(): one decoder KV cache per pipeline. Encode/embed calls need no lock (sessions are
        thread-safe); build one Pipeline per concurrent conversation for parallelism."""
        self._owner: int | None = None
        self._tries: dict[Choice, ChoiceTrie] = {}
        """Compiled constraints, most recent last (a demo or an eval reuses one Choice for every call)."""
        self._tries_lock = threading.Lock()  # compile() is public: callers outside generate()'s lock share the cache
        self.load_peak_rss_mb = peak_rss_mb()
        """Measured peak RSS once loaded (compare with ``plan.estimate``, which adds KV cache and activations)."""

    @classmethod
    def load(
        cls,
        bundle_dir: str | os.PathLike[str],
        profile: DeviceProfile | str | os.PathLike[str] | None = None,
        *,
        threads: int | None = None,
        check_hashes: bool = True,
    ) -> Pipeline:
        """Verify the bundle (schema, files, sizes, sha256), check it fits, and only then create the sessions.

        ``profile``: None runs every graph on onnxruntime's CPU provider with its defaults. Otherwise a
        DeviceProfile, a shipped profile name (``edgelmm.runtime.profile.list_profiles()``) or a YAML path: its
        providers are tried in order per graph (the one used is in ``res.metrics.providers``, skipped ones in
        ``provider_fallbacks`` and one logged warning), and the bundle's memory estimate must fit its budget
        (BudgetError before any session otherwise). ``bundle_dir`` may then also be a directory of variants, one
        bundle per subdirectory: the best that fits the budget and the precision preference is loaded
        (``pipe.plan.variant``). ``threads``: intra-op threads per session (default: the profile's, or
        onnxruntime's).
        """
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or not 0 <= threads <= MAX_THREADS):
            raise SpecError(
                f"threads must be an integer in [0, {MAX_THREADS}] (0: onnxruntime's default), got {threads!r:.20}")
        start = time.perf_counter()
        device = load_profile(profile) if profile is not None else None
        plan = plan_load(bundle_dir, device)
        root, manifest = plan.root, plan.manifest
        verify_files(root, manifest, check_hashes=check_hashes)
        verify_graphs(root, manifest)
        prompts = load_prompt_builder(root, manifest)  # tokenizer and chat template are checked before any session
        if plan.variant is not None:
            log.info("profile '%s': picked variant '%s' of %s; estimate %s", device.name, plan.variant, bundle_dir,
                     plan.estimate.summary())
        intra = threads or (device.threads.intra_op if device else 0)
        config = SessionConfig(intra_op_threads=intra, inter_op_threads=device.threads.inter_op if device else 1)
        sessions = {}
        for role, graph in manifest.graphs.items():
            providers = device.providers_for(role) if device else (ProviderSpec.cpu_default(),)
            sessions[role] = open_session(safe_path(root, graph.file), config, providers,
                                          cache_key=manifest.files[graph.file].sha256)
        _warn_fallbacks(device, sessions)
        return cls(root, manifest, sessions, (time.perf_counter() - start) * 1e3, plan, prompts=prompts)

    @property
    def providers(self) -> dict[str, str]:
        return {str(role): s.provider for role, s in self.sessions.items()}

    def _load_metrics(self, images: int) -> Metrics:
        """The per-pipeline part of every result's metrics: providers, fallbacks, variant, memory."""
        plan = self.plan
        return Metrics(
            load_ms=self.load_ms,
            images=images,
            providers=self.providers,
            provider_fallbacks={str(r): list(s.skipped) for r, s in self.sessions.items() if s.skipped},
            placement={str(r): dict(s.placement) for r, s in self.sessions.items()},
            profile=self.profile.name if self.profile else "",
            variant=(plan.variant or "") if plan else "",
            memory_estimate_mb=plan.estimate.total_mb if plan else 0.0,
            memory_budget_mb=float(self.profile.memory_budget_mb) if self.profile else 0.0,
            load_peak_rss_mb=self.load_peak_rss_mb,
        )

    # -- graph calls ------------------------------------------------------------------------------------------

    def prepare_images(self, images: Sequence[ImageInput]) -> list[ImageTiles]:
        """Load and preprocess each image into the tiles the vision encoder takes (one unless mode is tiles)."""
        if not self.manifest.has_vision:
            raise InputError("this bundle has no vision encoder")
        return [prepare(image, self.manifest.preprocess) for image in images]

    def encode_images(self, images: Sequence[ImageInput | ImageTiles]) -> np.ndarray:
        """Images -> float32 [tiles, num_image_tokens, hidden]: tower + connector, already in LM embedding space.

        Every tile of every image, in prompt order (one tile per image unless the bundle splits images).
        """
        tiles = [i if isinstance(i, ImageTiles) else self.prepare_images([i])[0] for i in images]
        pixels = np.concatenate([t.pixels for t in tiles])
        graph = self.manifest.graphs[GraphRole.VISION_ENCODER]
        session = self.sessions[GraphRole.VISION_ENCODER].session
        batch = graph.input("pixel_values").shape[0]
        with graph_errors(GraphRole.VISION_ENCODER):
            if isinstance(batch, int):  # a graph exported for a fixed batch (Qwen2-VL's vision: 1)
                return np.concatenate([session.run(["image_features"], {"pixel_values": pixels[i : i + batch]})[0]
                                       for i in range(0, len(pixels), batch)])
            return session.run(["image_features"], {"pixel_values": pixels})[0]

    def encode_items(self, items: Sequence[int]) -> np.ndarray:
        """Item ids -> float32 [N, num_item_tokens, hidden]: CF rows through the item encoder, in LM space."""
        if self.item_table is None:
            raise InputError("this bundle has no item encoder (items= needs an Item-Language Model bundle)")
        ids = check_item_ids(items, n_items=self.item_table.shape[0])
        with graph_errors(GraphRole.ITEM_ENCODER):
            return self.sessions[GraphRole.ITEM_ENCODER].session.run(["item_tokens"],
                                                                     {"item_cf": self.item_table[ids]})[0]

    def embed(self, ids: np.ndarray) -> np.ndarray:
        """int64 ids [S] -> float32 inputs_embeds [1, S, hidden]."""
        session = self.sessions[GraphRole.TOKEN_EMBEDDING].session
        with graph_errors(GraphRole.TOKEN_EMBEDDING):
            return session.run(["inputs_embeds"], {"input_ids": np.asarray(ids, dtype=np.int64)[None]})[0]

    def prompt_embeds(self, prompt: PromptIds, features: np.ndarray | None,
                      item_features: np.ndarray | None = None) -> np.ndarray:
        """Token embeddings with each tile's visual features (and each item's tokens) written into its slots:
        float32 [1, S, hidden]."""
        embeds = self.embed(prompt.ids)
        for i, (start, length) in enumerate(prompt.image_slots):
            embeds[0, start : start + length] = features[i]
        for i, (start, length) in enumerate(prompt.item_slots):
            embeds[0, start : start + length] = item_features[i]
        return embeds

    def _prefill(self, embeds: np.ndarray, positions: np.ndarray, total: int = 0) -> np.ndarray:
        """Start a new sequence with ``embeds`` float32 [1, S, hidden] at ``positions`` int64 [rows, S],
        ``prefill_chunk`` tokens per decoder call (activation memory grows with the tokens per call); return the
        last position's logits float32 [vocab]. ``total``: prompt + new tokens, reserved before the first call
        (a shared-buffer KV cache is then allocated once, not grown while generating; default: the prompt)."""
        self.decoder.reset()
        self.decoder.reserve(max(total, embeds.shape[1]))
        chunk = self.prefill_chunk or embeds.shape[1]
        for start in range(0, embeds.shape[1], chunk):
            logits = self.decoder.forward(embeds[:, start : start + chunk], positions[:, start : start + chunk])
        return logits

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
        constraint: Choice | None = None,
        items: Sequence[int] | None = None,
        **options: Any,
    ) -> Result:
        """Answer ``prompt`` about ``images``; greedy unless temperature > 0 (see GenerationSpec for options).

        ``constraint``: a :class:`~edgelmm.runtime.constraint.Choice`; the answer is then always one of its framed
        options, complete (max_new_tokens and stop strings do not cut it), and ``finish_reason`` is "choice".

        ``items``: item ids (rows of an item bundle's CF table), one per ``<item>`` placeholder of the prompt's text,
        in order; without ``items`` the text is taken literally.
        """
        if constraint is not None and not isinstance(constraint, Choice):
            raise InputError(f"constraint must be a Choice, got {type(constraint).__name__}")
        if stream is not None and not callable(stream):
            raise InputError(f"stream must be a callable taking each new piece of text, got {type(stream).__name__}")
        images, items = self._check_inputs(images, items)
        spec = self.generation_spec(config, max_new_tokens=max_new_tokens, **options)
        with self._exclusive("generate()"):
            start = time.perf_counter()
            ids, tiles, item_features = self._build(prompt, images, items, chat)
            return self._generate(ids, tiles, spec, stream, start, constraint, item_features)

    def score(
        self,
        prompt: str | Sequence[Message],
        answers: Sequence[str],
        images: Sequence[ImageInput] | None = None,
        *,
        chat: bool = True,
        items: Sequence[int] | None = None,
    ) -> np.ndarray:
        """How likely each of ``answers`` is as the complete reply to ``prompt``: float64 [len(answers)], the sum
        of log p over the answer's tokens and the end-of-turn token (``text.eos_token_ids[0]``); higher is likelier.
        Ranks candidates (a recommender's titles, labels) without generating; ``images``, ``items`` and ``chat`` as
        in generate(). The prompt is prefilled once and every answer continues it (runtime/scoring.py)."""
        if isinstance(answers, str | bytes) or not isinstance(answers, Sequence) or not answers \
                or not all(isinstance(a, str) and a for a in answers):
            raise InputError("answers must be a non-empty list of non-empty strings")
        images, items = self._check_inputs(images, items)
        end = self.manifest.text.eos_token_ids[0]
        answer_ids = [self.tokenizer.encode_untrusted(a) + [end] for a in answers]
        with self._exclusive("score()"):
            ids, tiles, item_features = self._build(prompt, images, items, chat)
            longest = max(map(len, answer_ids))
            if len(ids) + longest > self.max_context:
                raise InputError(f"prompt ({len(ids)} tokens) + the longest answer ({longest}) exceed the context of "
                                 f"{self.max_context}")
            features = self.encode_images(tiles) if tiles else None
            positions = prompt_positions(self.manifest.positions, len(ids), ids.image_slots)
            first = self._prefill(self.prompt_embeds(ids, features, item_features), positions, len(ids) + longest)
            return score_continuations(self.decoder, self.embed, first, int(positions.max()) + 1,
                                       positions.shape[0], answer_ids)

    def _check_inputs(self, images: Sequence[ImageInput] | None, items: Sequence[int] | None
                      ) -> tuple[list[ImageInput], list[int]]:
        """One-line InputErrors for malformed ``images`` / ``items``, before any work."""
        if images is not None and (isinstance(images, str | bytes) or not isinstance(images, Sequence)):
            raise InputError(f"images must be a list, got {type(images).__name__}")
        images = list(images or [])
        if items is not None and (isinstance(items, str | bytes) or not isinstance(items, Sequence)):
            raise InputError(f"items must be a list of item ids, got {type(items).__name__}")
        items = list(items or [])
        if items:
            if self.item_table is None:
                raise InputError("this bundle has no item encoder (items= needs an Item-Language Model bundle)")
            check_item_ids(items, n_items=self.item_table.shape[0])
        if len(images) > MAX_IMAGES_PER_PROMPT:
            raise InputError(f"{len(images)} images given; the limit is {MAX_IMAGES_PER_PROMPT} per prompt")
        return images, items

    def _build(self, prompt: str | Sequence[Message], images: list[ImageInput], items: list[int], chat: bool
               ) -> tuple[PromptIds, list[ImageTiles], np.ndarray | None]:
        """Prompt ids with image and item slots, the images' tiles and the items' tokens (None without items)."""
        tiles = self.prepare_images(images) if images else []
        item_tokens = self.manifest.items.num_item_tokens if items else 0
        ids = self.prompts.build(prompt, len(images), chat=chat, grids=[t.grid for t in tiles],
                                 n_items=len(items), item_tokens=item_tokens)
        return ids, tiles, self.encode_items(items) if items else None

    def generate_ids(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int | None = None,
        stream: StreamCallback | None = None,
        config: GenerationSpec | None = None,
        **options: Any,
    ) -> Result:
        """Continue raw token ids: no chat template, no tokenization, no images (benchmarks feed exact ids).

        ``prompt_ids``: ints in [0, vocab), 1 <= len < max_context. ``ignore_eos=True`` (a generation option)
        generates exactly ``max_new_tokens``, as ``edgelmm bench``'s pp<N> / tg<N> tests need.
        """
        ids = np.asarray(prompt_ids)
        vocab, limit = self.manifest.model.vocab_size, self.max_context
        if ids.ndim != 1 or ids.dtype.kind not in "iu" or not 1 <= ids.shape[0] < limit:
            raise InputError(f"prompt_ids must be 1-D ints, 1 <= length < {limit}; got {ids.dtype} {ids.shape}")
        if ids.min() < 0 or ids.max() >= vocab:
            raise InputError(f"prompt_ids must lie in [0, {vocab}); got {ids.min()}..{ids.max()}")
        spec = self.generation_spec(config, max_new_tokens=max_new_tokens, **options)
        with self._exclusive("generate_ids()"):
            return self._generate(PromptIds(ids.astype(np.int64), ()), [], spec, stream, time.perf_counter())

    @contextlib.contextmanager
    def _exclusive(self, call: str) -> Iterator[None]:
        """Hold the pipeline's lock (one KV cache); refuse re-entry from a stream callback, which would deadlock."""
        if self._owner == threading.get_ident():
            raise InputError(f"{call} was called from its own stream callback; call it after the first returns")
        with self._lock:
            self._owner = threading.get_ident()
            try:
                yield
            finally:
                self._owner = None

    def compile(self, constraint: Choice) -> ChoiceTrie:
        """``constraint``'s token trie under this bundle's tokenizer (kept for the next call with the same Choice)."""
        with self._tries_lock:
            trie = self._tries.pop(constraint, None) or constraint.compile(
                self.tokenizer.encode_untrusted, self.manifest.text.eos_token_ids)
            self._tries[constraint] = trie
            while len(self._tries) > 8:
                del self._tries[next(iter(self._tries))]
            return trie

    def _generate(
        self, ids: PromptIds, tiles: list[ImageTiles], spec: GenerationSpec, stream: StreamCallback | None, t0: float,
        constraint: Choice | None = None,
        item_features: np.ndarray | None = None,
    ) -> Result:
        """Encode images, prefill, decode. ``t0``: perf_counter() at the call, the origin of TTFT."""
        metrics = self._load_metrics(len(tiles))
        trie, opening, start = None, [], None
        if constraint is not None:  # the frame's common opening needs no decision: prefill it with the prompt
            trie = self.compile(constraint)
            opening, start = trie.opening()
            ids = PromptIds(np.concatenate([ids.ids, np.asarray(opening, np.int64)]), ids.image_slots)
        room = self.max_context - len(ids)
        if room < 1:  # the bundle's own cap is checked by the prompt builder; this is the profile's lower one
            owner = f"profile '{self.profile.name}'" if self.profile else "this pipeline"
            raise InputError(f"prompt is {len(ids)} tokens; {owner} allows a context of {self.max_context}"
                             " (max_context), leaving no room to generate")
        features = None
        if tiles:
            t1 = time.perf_counter()
            features = self.encode_images(tiles)
            metrics.vision_ms = (time.perf_counter() - t1) * 1e3
        t2 = time.perf_counter()
        metrics.preprocess_ms = (t2 - t0) * 1e3 - metrics.vision_ms
        positions = prompt_positions(self.manifest.positions, len(ids), ids.image_slots)
        max_new = min(spec.max_new_tokens, room)
        if trie is not None:
            max_new = trie.max_tokens - len(opening)
            if max_new > room:
                raise InputError(f"prompt is {len(ids)} tokens; the longest option needs {max_new} more and the "
                                 f"context is {self.max_context}")
        first_logits = self._prefill(self.prompt_embeds(ids, features, item_features), positions, len(ids) + max_new)
        metrics.prefill_ms = (time.perf_counter() - t2) * 1e3
        steps = 0

        def step(token: int) -> np.ndarray:
            nonlocal steps
            steps += 1
            return self.decoder.forward(self._embed_token(token))

        if trie is not None:
            loop = choice_loop(
                trie, start, first_logits, lambda tokens: self.decoder.forward(self.embed(np.asarray(tokens))),
                spec=spec, prompt_ids=ids.ids[: len(ids) - len(opening)], opening=opening,
                decode=self.tokenizer.decode, stream=stream)
            steps = loop.decode_steps
        else:
            loop = token_loop(
                first_logits,
                step,
                spec=spec,
                max_new_tokens=max_new,
                eos_ids=frozenset(self.manifest.text.eos_token_ids),
                prompt_ids=ids.ids,
                tokenizer=self.tokenizer,
                stream=stream,
            )
        metrics.decode_steps = steps
        metrics.ttft_ms = (loop.first_token_at - t0) * 1e3
        metrics.decode_ms = loop.decode_s * 1e3
        prompt_tokens = len(ids) - len(opening)  # the opening is part of the answer, prefilled with the prompt
        metrics.prompt_tokens = prompt_tokens
        metrics.generated_tokens = len(loop.token_ids)
        metrics.peak_rss_mb = peak_rss_mb()
        return Result(loop.text, loop.token_ids, metrics, loop.finish_reason, prompt_tokens)


def _warn_fallbacks(profile: DeviceProfile | None, sessions: dict[GraphRole, GraphSession]) -> None:
    """One warning per distinct fallback situation in this process (loading twice does not repeat it)."""
    moved = [f"{role}: {'; '.join(s.skipped)} -> running on {s.provider}" for role, s in sessions.items() if s.skipped]
    if not moved:
        return
    message = f"profile '{profile.name if profile else '-'}' fell back: " + " | ".join(moved)
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning(message)
