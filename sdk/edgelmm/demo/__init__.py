"""The Gradio demo (``edgelmm demo``): a browser UI over ``edgelmm.runtime``. Never torch.

``engine`` holds the pipeline, the conversation and the turn logic (runtime only, no gradio), ``app`` builds the
Gradio UI over it, ``cli`` is the verb. Install with ``pip install 'edgelmm[demo]'``.
"""
