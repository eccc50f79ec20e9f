"""The frozen CLIP: loading (backbone), the one door into open_clip's modules (clip_adapter), the losses."""
