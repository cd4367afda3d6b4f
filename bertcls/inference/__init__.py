"""Writing ``bertcls predict`` results: output formats, and the merge of the DDP ranks' shares into one file."""
