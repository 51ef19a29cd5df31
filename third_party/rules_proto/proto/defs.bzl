"""Re-exports Bazel 4's native proto rules so that no rules_proto download is needed."""

proto_library = native.proto_library
proto_lang_toolchain = native.proto_lang_toolchain
