"""Shared build settings for meshlib targets."""

MESHLIB_COPTS = [
    "-Wextra",
    "-Wno-unused-parameter",
    "-Wno-missing-field-initializers",
]

def meshlib_cc_library(name, copts = [], **kwargs):
    native.cc_library(name = name, copts = MESHLIB_COPTS + copts, **kwargs)

def meshlib_cc_binary(name, copts = [], **kwargs):
    native.cc_binary(name = name, copts = MESHLIB_COPTS + copts, **kwargs)

def meshlib_cc_test(name, copts = [], deps = [], **kwargs):
    native.cc_test(
        name = name,
        copts = MESHLIB_COPTS + copts,
        deps = deps + ["@system//:gtest_main"],
        **kwargs
    )
