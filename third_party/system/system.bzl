"""Exposes Debian's system libraries to Bazel, with link lines taken from pkg-config."""

_ABSL_COMPONENTS = [
    "absl_base",
    "absl_btree",
    "absl_flags",
    "absl_flags_parse",
    "absl_flags_usage",
    "absl_flat_hash_map",
    "absl_flat_hash_set",
    "absl_inlined_vector",
    "absl_random_random",
    "absl_status",
    "absl_statusor",
    "absl_str_format",
    "absl_strings",
    "absl_synchronization",
    "absl_time",
    "absl_any_invocable",
    "absl_cleanup",
    "absl_hash",
]

def _pkg_config_libs(ctx, modules):
    result = ctx.execute(["pkg-config", "--libs"] + modules)
    if result.return_code != 0:
        fail("pkg-config failed for %s: %s (run tools/setup.sh first)" % (modules, result.stderr))
    seen = {}
    libs = []

    # pkg-config repeats libraries; keep the last occurrence so that the
    # order still satisfies the static-link rule "users before providers".
    words = result.stdout.strip().split(" ")
    for i in range(len(words) - 1, -1, -1):
        w = words[i]
        if w and w not in seen:
            seen[w] = True
            libs.insert(0, w)
    return libs

def _system_libs_impl(ctx):
    absl = _pkg_config_libs(ctx, _ABSL_COMPONENTS)
    cares = _pkg_config_libs(ctx, ["libcares"])
    nghttp2 = _pkg_config_libs(ctx, ["libnghttp2"])
    grpc = []
    if ctx.execute(["pkg-config", "--exists", "grpc++"]).return_code == 0:
        grpc = _pkg_config_libs(ctx, ["grpc++"])
    ctx.symlink("/usr/include", "include")
    ctx.file("BUILD.bazel", """
package(default_visibility = ["//visibility:public"])

cc_library(
    name = "absl",
    linkopts = {absl},
)

cc_library(
    name = "cares",
    linkopts = {cares},
)

cc_library(
    name = "nlohmann_json",
)

# nghttp2 (libnghttp2-dev): HTTP/2 framing for the gRPC transport.
cc_library(
    name = "nghttp2",
    linkopts = {nghttp2},
)

# BoringSSL from android-libboringssl-dev. Its headers live in
# /usr/include/android and must shadow OpenSSL 3's in /usr/include.
cc_library(
    name = "boringssl",
    hdrs = glob(["include/android/openssl/*.h"]),
    includes = ["include/android"],
    linkopts = [
        "-L/usr/lib/x86_64-linux-gnu/android",
        "-Wl,-rpath,/usr/lib/x86_64-linux-gnu/android",
        "-lssl",
        "-lcrypto",
    ],
)

cc_library(
    name = "gtest",
    linkopts = ["-lgmock", "-lgtest", "-pthread"],
)

cc_library(
    name = "gtest_main",
    linkopts = ["-lgmock_main", "-lgmock", "-lgtest", "-pthread"],
)

cc_library(
    name = "benchmark",
    linkopts = ["-lbenchmark", "-pthread"],
)

cc_library(
    name = "benchmark_main",
    linkopts = ["-lbenchmark_main", "-lbenchmark", "-pthread"],
)

# gRPC C++ (libgrpc++-dev) is only a benchmark peer; it links OpenSSL, so it
# must never share a binary with :boringssl.
cc_library(
    name = "grpcpp",
    defines = ["MESHLIB_HAVE_GRPC={have_grpc}"],
    linkopts = {grpc},
)
""".format(
        absl = repr(absl),
        cares = repr(cares),
        nghttp2 = repr(nghttp2),
        grpc = repr(grpc),
        have_grpc = "1" if grpc else "0",
    ))

system_libs = repository_rule(
    implementation = _system_libs_impl,
    local = True,
)
