"""bengali-empathy-llama: QLoRA fine-tuning, chat and honest evaluation of a Bengali counselor model.

One module per stage; data flows one way:
config -> data -> model -> train -> adapter -> generate/chat -> score -> report.
"""

__version__ = "0.1.0"
