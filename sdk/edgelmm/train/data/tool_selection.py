"""`tool-selection`: an image + an instruction -> the tool (catalog id) that serves it (MLLM-Tool, torch-free).

The core are instructions that are ambiguous as text and resolved by the image: "What does this say?" needs a
document reader on a page of text, a digit classifier on a handwritten digit and a captioning model on a photo.
MLLM-Tool's test set marks five ambiguity categories without naming them; ours are five intents of that kind
(``AMBIGUOUS``), each mapping the input type (scene, digit, text, chart, photo) to the tools that serve it. Around
them: unambiguous image requests whose wording names the task, text-only requests (the image is irrelevant) and
requests no tool serves (``unknown``). Most instructions have several valid tools: each valid tool group and every
id of it (task name, default checkpoint, synonyms; see tools.py).

Splits: ``test`` and ``val`` use held-out templates (the last HELD_OUT of every intent), held-out photographs and
their own image seeds; ``train`` never sees them. A ``train`` example is one training row: an instruction drawn with
probability proportional to its number of valid ids, answered by one of them uniformly, which is in distribution
MLLM-Tool's training set (each instruction repeated once per valid tool, shuffled). ``val``/``test`` examples are
instructions, answered by their first valid id, with the whole valid set in ``valid``.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import numpy as np
from PIL import Image

from edgelmm.train.data import tool_images
from edgelmm.train.data.base import SPLIT_SIZE, Example, seed_for
from edgelmm.train.data.tools import UNKNOWN, load_catalog

INPUT_TYPES = ("scene", "digit", "text", "chart", "photo")
HELD_OUT = 1
"""Templates per intent reserved for val/test (the last ones)."""
NONE = "none"


@dataclasses.dataclass(frozen=True, slots=True)
class Intent:
    name: str
    ambiguity: str
    """One of AMBIGUITY_TYPES for an instruction the image must resolve, "none" when the text alone decides."""
    templates: tuple[str, ...]
    tools: dict[str, tuple[str, ...]]
    """Input type -> the tool groups (pipeline tasks) that serve the request on that kind of image."""


def _everywhere(*tasks: str) -> dict[str, tuple[str, ...]]:
    return dict.fromkeys(INPUT_TYPES, tasks)


DQA, VLM, CLS, ZCLS = "document-question-answering", "image-text-to-text", "image-classification", \
    "zero-shot-image-classification"
DET, ZDET, SEG, SAM = "object-detection", "zero-shot-object-detection", "image-segmentation", "mask-generation"

AMBIGUOUS = (
    Intent("read", "read", (
        "What does this say?", "Read this for me.", "What's written here?", "Can you tell me what it says?",
        "Tell me what's on this.", "Read it out to me.", "What's the text here?", "What is written on this?",
        "Can you read this?", "Please read what this shows.", "Help me read this.", "Transcribe this for me.",
        "What does it read?", "What words or symbols are on this?",
        "I can't make this out, what does it say?"),
           {"text": (DQA,), "chart": (DQA, VLM), "digit": (CLS, ZCLS), "scene": (VLM,), "photo": (VLM,)}),
    Intent("identify", "identify", (
        "What is this?", "What am I looking at?", "Tell me what this is.", "Identify this for me.",
        "Any idea what this is?", "What kind of thing is this?", "Can you recognise this?", "What is shown here?",
        "Name what you see.", "Help me figure out what this is.", "What would you call this?",
        "Recognise this for me.", "Do you know what this is?", "What's in front of me?",
        "What's that?"),
           {"digit": (CLS, ZCLS), "photo": (CLS, ZCLS), "scene": (DET, ZDET), "text": (DQA,), "chart": (VLM,)}),
    Intent("locate", "locate", (
        "Where is everything?", "Point out what is in here.", "Show me where things are.", "Mark the important parts.",
        "Where are the things in this?", "Find where everything is.", "Show me the parts of this.",
        "Point to each thing here.", "Where exactly is each item?", "Locate the stuff in here.",
        "Can you mark where things are?", "Pick out the main parts.", "Show me what's where.",
        "Indicate where the objects are.",
        "Highlight what matters here."),
           {"scene": (DET, ZDET), "photo": (SEG, SAM), "text": (DQA,)}),
    Intent("values", "values", (
        "What are the numbers here?", "Give me the values in this.", "Which numbers does this show?",
        "Pull out the numbers.", "What number is this?", "Read off the values.", "What values are shown?",
        "List the numbers you see.", "What are the amounts here?", "Extract the numeric values.",
        "Which value does this show?", "Get me the numbers from this.", "What do the numbers say?",
        "Give me the data in this.",
        "Tell me the figures."),
           {"digit": (CLS, ZCLS), "chart": (DQA, VLM), "text": (DQA,)}),
    Intent("count", "count", (
        "How many are there?", "Count them for me.", "How many things can you see?", "Give me a count.",
        "How many objects are in this?", "Count everything here.", "What's the number of items?",
        "Can you count these?", "How many do you see?", "Count the things in this.", "Tally them up for me.",
        "How many items are shown?", "Give me the number of things here.", "How many of them are there?",
        "What's the total count here?"),
           {"scene": (DET, ZDET), "photo": (DET, SAM), "text": (DQA,), "chart": (DQA, VLM)}),
)
AMBIGUITY_TYPES = tuple(i.ambiguity for i in AMBIGUOUS)

EXPLICIT = (
    Intent("depth", NONE, (
        "Estimate the depth of this image.", "Make a depth map of this picture.",
        "Which parts of this image are closest to the camera? Give me per-pixel depth.",
        "Compute how far away every pixel of this picture is.", "Run depth estimation on this image.",
        "How far is each point in this picture from the camera?", "Give me a depth estimate for this photo.",
        "Turn this image into a depth map.", "Estimate distances across this picture, pixel by pixel.",
        "Show me what's near and what's far in this image as depth.", "I need monocular depth for this picture.",
        "Produce a per-pixel depth image from this.", "Infer the scene depth of this image.",
        "Generate depth values for this picture.",
        "Predict a depth map for this."),
           _everywhere("depth-estimation")),
    Intent("embed", NONE, (
        "Turn this image into a feature vector for search.", "Give me an embedding of this picture.",
        "Extract image features I can index.", "Compute a vector representation of this image.",
        "Get me image features for a retrieval system.", "Embed this image.",
        "I need a feature vector of this picture.", "Make a vector of this image so I can find similar ones.",
        "Extract a descriptor vector from this picture.", "Compute image embeddings for this.",
        "Represent this picture as numbers I can compare.", "Give me the visual features of this image.",
        "Produce an image embedding I can store in a vector database.", "Vectorize this picture.",
        "Encode this picture as an embedding for similarity search."),
           _everywhere("image-feature-extraction")),
    Intent("segment", NONE, (
        "Segment this image into regions.", "Give me a mask for every object in this picture.",
        "Split this image into labelled segments.", "Produce segmentation masks for this.",
        "Run image segmentation on this.", "Divide this picture into its parts with masks.",
        "Make a segmentation map of this image.", "Label every pixel of this picture by region.",
        "Cut this image into separate regions.", "Give me pixel masks of the objects here.",
        "Segment everything in this picture.", "Separate the regions of this image.",
        "Create masks for the areas in this image.", "I want a per-pixel segmentation of this.",
        "Outline every region of this picture with a mask."),
           _everywhere(SEG, SAM)),
    Intent("detect", NONE, (
        "Draw bounding boxes around the objects in this image.",
        "Detect the objects in this picture and give me their boxes.", "Run object detection on this.",
        "Find every object here and box it.", "Put a box around each object in this picture.",
        "Detect everything in this image.", "Locate the objects with bounding boxes.",
        "I need object detections for this image.", "Find the objects in this picture with their coordinates.",
        "Give me bounding boxes for this picture.", "Box each thing you find in this image.",
        "Run a detector over this picture.", "Where are the objects? Give me boxes.",
        "Return a box for every object here.",
        "Give me boxes and labels for the things in this image."),
           _everywhere(DET, ZDET)),
    Intent("classify", NONE, (
        "Classify this image into a category.", "Which class does this picture belong to?",
        "Give me the category label of this image.", "Run an image classifier on this.",
        "What category is this image?", "Assign a class label to this picture.", "Classify this picture.",
        "Predict the class of this image.", "Label this image with its category.", "Sort this picture into a class.",
        "Which category fits this image best?", "Give me the top class for this picture.",
        "Do image classification on this.", "Tag this image with a single category.",
        "Put this picture into one of the standard categories."),
           _everywhere(CLS, ZCLS)),
    Intent("caption", NONE, (
        "Write a caption for this image.", "Describe this picture in a sentence.",
        "Generate a description of this image.", "Caption this for me.", "Describe what's in this image.",
        "Give me a short description of this picture.", "Write a sentence about this image.",
        "Summarise this picture in words.", "Tell me in words what this image shows.",
        "Make a caption for this picture.", "Give this photo a caption.", "Write a one-line description of this.",
        "Explain what is happening in this picture.", "Generate a caption.",
        "Write alt text for this picture."),
           _everywhere(VLM)),
)
SENTENCES = ("the food was cold and the waiter was rude", "Alice flew from Paris to Berlin on Monday",
             "I loved every minute of this film", "the battery lasts two days and charges fast",
             "Barack Obama visited Tokyo with Angela Merkel", "this is the worst phone I have ever owned")
TEXT_ONLY = (
    Intent("sentiment", NONE, (
        "Is this review positive or negative: {s}", "What is the sentiment of: {s}",
        "Rate the mood of this sentence: {s}", "Tell me if this comment is happy or angry: {s}",
        "Run sentiment analysis on: {s}", "Is the writer pleased or unhappy here: {s}",
        "How does the author feel: {s}", "Positive, negative or neutral: {s}", "Detect the sentiment in: {s}",
        "Is this a good or a bad review: {s}", "What's the emotional polarity of: {s}",
        "Does this text sound positive: {s}", "Judge the attitude of this text: {s}",
        "Score how positive this is: {s}",
        "Classify the tone of: {s}"),
           _everywhere("text-classification")),
    Intent("entities", NONE, (
        "Tag the names and places in: {s}", "Find the named entities in: {s}",
        "Which people and locations appear in: {s}", "Mark every person and city in: {s}",
        "Run named entity recognition on: {s}", "List the people, places and organisations in: {s}",
        "Label each word that is a name in: {s}", "Do NER on: {s}", "Who and where is mentioned in: {s}",
        "Pick out the proper nouns in: {s}", "Tag each token with its entity type: {s}",
        "Find all person and location names in: {s}", "Mark up the names in: {s}",
        "Which named things occur in: {s}",
        "Extract the entities from: {s}"),
           _everywhere("token-classification")),
    Intent("speak", NONE, (
        "Read this sentence aloud: {s}", "Turn this into speech: {s}", "Make an audio clip that says: {s}",
        "Say this out loud for me: {s}", "Convert this text to speech: {s}", "I want to hear this spoken: {s}",
        "Generate audio of someone saying: {s}", "Voice this line: {s}", "Make a recording of: {s}",
        "Text-to-speech please: {s}", "Speak this sentence: {s}", "Create a spoken version of: {s}",
        "Narrate this for me: {s}", "Produce speech audio for: {s}",
        "Synthesize a voice reading: {s}"),
           _everywhere("text-to-audio")),
)
OUT_OF_CATALOG = (
    Intent("unknown", NONE, (
        "Book me a table for two tonight.", "What will the weather be in Oslo tomorrow?",
        "Transfer fifty euros to my landlord.", "Set an alarm for seven in the morning.",
        "Turn off the living room lights.", "Send a message to my sister.", "Remind me to call the dentist at noon.",
        "What's the score of the football game?", "Buy two tickets for the concert.", "Call my mum.",
        "Add milk to my shopping list.", "Find me a cheap flight to Rome.", "Start a ten minute timer.",
        "Pay my electricity bill.", "Lock the front door.",
        "Order me a taxi to the airport."),
           _everywhere(UNKNOWN)),
)
FAMILIES = ((AMBIGUOUS, 0.5), (EXPLICIT, 0.3), (TEXT_ONLY, 0.1), (OUT_OF_CATALOG, 0.1))
"""Instruction families and their shares: half the instructions are ambiguous (the subset the image decides)."""


@dataclasses.dataclass(frozen=True, slots=True)
class ToolExample(Example):
    valid: tuple[str, ...] = ()
    """Every tool id that serves the instruction on this image (an answer in it is correct)."""
    tasks: tuple[str, ...] = ()
    """The valid tool groups (pipeline tasks)."""
    ambiguity: str = NONE
    input_type: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class _Draw:
    intent: Intent
    input_type: str
    question: str
    valid: tuple[str, ...]


@functools.cache
def _most_valid() -> int:
    """The largest valid set of any (intent, input type): a training row keeps an instruction w.p. |valid| / this."""
    return max(len(load_catalog().valid_ids(i.tools[t])) for family, _ in FAMILIES for i in family for t in i.tools)


class ToolSelectionDataset:
    """``blind``: the same examples with every image replaced by a plain grey square (the text-only baseline's data:
    the image says nothing about the answer)."""

    version = "tool-selection-v2"
    splits = ("train", "val", "test")

    def __init__(self, *, blind: bool = False) -> None:
        self.blind = blind
        self.name = "tool-selection-blind" if blind else "tool-selection"

    def example(self, split: str, index: int) -> ToolExample:
        rng = np.random.default_rng([seed_for(split, index, self.splits), 0x7001])
        draw = self._draw(split, rng)
        if split == "train":  # a training row: instructions weighted by their number of valid ids (see module doc)
            while rng.random() >= len(draw.valid) / _most_valid():
                draw = self._draw(split, rng)
            answer = draw.valid[int(rng.integers(len(draw.valid)))]
        else:
            answer = draw.valid[0]
        tasks = draw.intent.tools[draw.input_type]
        if self.blind:  # a plain grey square whose shade is drawn independently of the instruction and the image
            shade = int(np.random.default_rng([seed_for(split, index, self.splits), 0xB11D]).integers(96, 160))
            image = Image.new("RGB", (tool_images.CANVAS, tool_images.CANVAS), (shade,) * 3)
        else:
            image = self.input_image(draw.input_type, split, rng)
        return ToolExample(image=image, caption=f"a {draw.input_type} image",
                           phrases=(), question=draw.question, answer=json.dumps({"api_name": answer}),
                           kind=draw.intent.name, valid=draw.valid, tasks=tasks,
                           ambiguity=draw.intent.ambiguity, input_type=draw.input_type)

    @staticmethod
    def _valid(tasks: tuple[str, ...]) -> tuple[str, ...]:
        return load_catalog().valid_ids(tasks)

    def _draw(self, split: str, rng: np.random.Generator) -> _Draw:
        family = FAMILIES[int(rng.choice(len(FAMILIES), p=[w for _, w in FAMILIES]))][0]
        intent = family[int(rng.integers(len(family)))]
        types = tuple(intent.tools)
        input_type = types[int(rng.integers(len(types)))]
        pool = intent.templates[-HELD_OUT:] if split != "train" else intent.templates[:-HELD_OUT]
        question = pool[int(rng.integers(len(pool)))].format(s=SENTENCES[int(rng.integers(len(SENTENCES)))])
        return _Draw(intent, input_type, question, self._valid(intent.tools[input_type]))

    @staticmethod
    def input_image(input_type: str, split: str, rng: np.random.Generator) -> Image.Image:
        """An image of ``input_type`` (one of INPUT_TYPES) from ``split``'s sources, drawn with ``rng``."""
        seed = int(rng.integers(SPLIT_SIZE))
        if input_type in ("scene", "digit"):  # the source dataset's own split and seed ranges
            from edgelmm.train.data import DATASETS

            return DATASETS["shapes" if input_type == "scene" else "digits"].example(split, seed).image
        sub = np.random.default_rng([seed, 0x1A6E])
        if input_type == "text":
            return tool_images.text_page(sub)
        if input_type == "chart":
            return tool_images.chart(sub)
        return tool_images.photo(sub, split)


def tool_of(answer: str) -> str | None:
    """The ``api_name`` of a model's answer, or None when it does not parse as ``{"api_name": "<id>"}``.

    Accepts the paper's single-quoted form too (``{'api_name': 'x'}``), which its models emit."""
    text = answer.strip()
    try:
        value = json.loads(text)
    except ValueError:
        try:
            value = json.loads(text.replace("'", '"'))
        except ValueError:
            return None
    if isinstance(value, dict) and set(value) == {"api_name"} and isinstance(value["api_name"], str):
        return value["api_name"]
    return None
