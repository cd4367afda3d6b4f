"""Export a fine-tuned model out of bertcls: a Hugging Face model folder, ONNX."""
