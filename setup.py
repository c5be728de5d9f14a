"""Builds the optional extensions: ``hefl._native`` and ``hefl._mont`` (GMP), ``hefl._zsend``.

Everything else is declared in pyproject.toml.  The extensions are ``optional``: where GMP's
headers (Debian: libgmp-dev) or a C compiler are missing, the install still succeeds and
hefl falls back to gmpy2 (slower, same results); without ``hefl._zsend`` the transport
sends and receives frame by frame through pyzmq and waits for zero-copy sends through
pyzmq's trackers (slower, same results).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "hefl._native",
            sources=["hefl/native/_native.c"],
            libraries=["gmp"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
        Extension(
            "hefl._mont",
            sources=["hefl/native/_mont.c"],
            libraries=["gmp"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
        Extension(
            "hefl._zsend",
            sources=["hefl/native/_zsend.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
    ]
)
