"""Corpus builders: synthesise training data offline from voices and sounds that install as packages.

Teacher voices are build-time tools, never runtime dependencies of generation.
"""
