"""Prompt methods. Each is one file here and one YAML under configs/method/."""
