"""The hotplate controller: turns an app's source into releases and puts them live.

One module per pipeline stage: :mod:`.plan` reads the manifest, :mod:`.build`
compiles modules through a content-addressed cache, :mod:`.release` assembles
an immutable release directory and smoke-checks it.
"""
