"""The slots a prompt method is composed of: context (the words around the label) and labels."""
