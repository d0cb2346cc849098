"""`python -m safehub.settings`: print docs/settings.md."""

from safehub.settings.catalogue import markdown

print(markdown(), end="")
