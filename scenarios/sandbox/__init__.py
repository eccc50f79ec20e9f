"""The offline sandbox: a procedural world of captioned shapes, its styles and its downstream tasks."""
