"""safehub: pseudonymised, linkable warning-sign sharing between agencies.

Import layout: the code lives in the repository's top-level folders (services/, schemas/,
consumers/, producers/, deploy/), all reachable under this one name.
"""

__version__ = "0.1.0"
