"""Optional Lightning callbacks for lightning-meta-rl (media and diagnostics; training runs without any).

This top-level package is ours, not the unrelated PyPI package named ``callbacks``; a test checks that.
"""
