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

def meshlib_cc_test(name, copts = [], deps = [], data = [], **kwargs):
    native.cc_test(
        name = name,
        copts = MESHLIB_COPTS + copts,
        deps = deps + ["@system//:gtest_main"],
        # Read by --config=tsan (TSAN_OPTIONS in .bazelrc), relative to the
        # test's working directory.
        data = data + ["//tools:tsan.supp"],
        **kwargs
    )
