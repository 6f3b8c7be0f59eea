"""Sphinx configuration of the torchgeo-ssg2 documentation.

Build with ``make docs`` (``sphinx-build -W --keep-going -b html docs docs/_build/html``).
Nothing here reaches the network: there is no intersphinx, and every page, figure
and docstring comes from this repository.
"""

import torchgeo_ssg2

project = 'torchgeo-ssg2'
author = 'torchgeo-ssg2 developers'
copyright = '2026, torchgeo-ssg2 developers'
version = release = torchgeo_ssg2.__version__

extensions = [
    'sphinx.ext.autodoc',
    'sphinx.ext.napoleon',
    'sphinx.ext.viewcode',
    'myst_parser',
]

source_suffix = {'.rst': 'restructuredtext', '.md': 'markdown'}
root_doc = 'index'
exclude_patterns = ['_build', 'Thumbs.db', '.DS_Store']

# Google-style docstrings, as in torchgeo.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

autodoc_default_options = {
    'members': True,
    'show-inheritance': True,
    'member-order': 'bysource',
}
autodoc_typehints = 'description'
autodoc_typehints_description_target = 'documented'
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = False
# Lightning, torch and torchgeo are imported for real (they are installed), so the
# documented signatures are the code's own.

# Cross-references to classes of other projects (torch, torchgeo, Lightning) are left
# as plain text: intersphinx would download their inventories.
nitpicky = False

myst_heading_anchors = 3
myst_enable_extensions = ['colon_fence']
# Markdown pages link to files of the repository (configs, scripts); those are not
# documents of this site.
suppress_warnings = ['myst.xref_missing']

html_theme = 'furo'
html_title = f'torchgeo-ssg2 {release}'
html_static_path: list[str] = []
