"""Only what pyproject.toml cannot say: the sync library's two optional C accelerators.

``optional=True``: where no C compiler (or no ``sqlite3ext.h``, Debian's ``libsqlite3-dev``) is installed the
build goes on without them; ``connectif_sync.hashing`` then uses its numpy code, which gives the same hashes
(see ``_hashing.c``), and full scans read every value instead of probing source hashes in SQLite (see
``_sqlite_hash.c``).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "connectif_sync._hashing",
            sources=["include/connectif_sync/_hashing.c"],
            depends=["include/connectif_sync/_hash64.h"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
        Extension(
            "connectif_sync._sqlite_hash",
            sources=["include/connectif_sync/_sqlite_hash.c"],
            depends=["include/connectif_sync/_hash64.h"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
    ]
)
