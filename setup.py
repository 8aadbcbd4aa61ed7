"""Only what pyproject.toml cannot say: the optional C accelerator of the sync library's row hash.

``optional=True``: where no C compiler is installed the build goes on without it and
``connectif_sync.hashing`` uses its numpy code, which gives the same hashes (see ``_hashing.c``).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "connectif_sync._hashing",
            sources=["include/connectif_sync/_hashing.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
