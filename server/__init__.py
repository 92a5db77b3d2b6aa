"""The hotplate server: a Flask/gunicorn front that serves one release of C modules.

Modules are loaded in gunicorn worker processes only (see :mod:`server.worker`),
so replacing the workers replaces every byte of module code and memory.
"""
