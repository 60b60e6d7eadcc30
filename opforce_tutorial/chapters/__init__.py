"""The book's chapters as configurations of the package: chapter 1's bond toy, chapter 2's alanine dipeptide.

General modules never import these; the chapters publish their recipes to :mod:`opforce_tutorial.catalog`.
"""
