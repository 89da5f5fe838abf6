"""``sieve review``: a web page over the outputs (file mode or the topics) to look at decisions and
overrule them. ``files.py`` and ``topics.py`` read the two kinds of source and write overrides,
``store.py`` indexes what they read, ``pages.py`` renders it, ``server.py`` serves it safely.
See docs/review.md."""
