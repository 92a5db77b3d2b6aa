"""What the smoke checks' fork server (controller/release.py) does once, so
that every check, a fork of it, starts with it done.

- The runtime is built, loaded and its declarations read: 15 ms a check.
- multiprocessing runs the controller's main module again in each child
  (its ``__mp_main__``); the fork server imports that module beforehand
  so that costs nothing, and runpy then warns, once per check, that it
  finds the module imported already. That is by design here, so the
  warning is not printed (it reached ``hotplate dev``'s console each save).
"""
import warnings

from . import libhotplate, smoke  # noqa: F401  (smoke: what each check runs)

warnings.filterwarnings("ignore", message=r".* found in sys\.modules after import of package", category=RuntimeWarning,
                        module="runpy")
libhotplate.load()
