// The "file" discovery kind: endpoints from a JSON file that is watched.
//
//   "discovery": {"file": {"path": "/etc/mesh/echo.json", "poll_interval": "1s"}}
//
// The file has the static kind's shape: {"endpoints": ["127.0.0.1:7001",
// {"address": "[::1]:7002", "weight": 2, "zone": "b"}]}. A relative path is
// taken from the process's working directory.
//
// Changes are seen through inotify on the file's directory (so a file
// replaced by rename(2), the safe way to update it, is seen like an
// in-place write), confirmed and backed up by polling the file's identity
// (inode, size, mtime) every `poll_interval` (default 1s, 10ms-60s). A burst
// of events is coalesced for `settle` (default 20ms) before the file is
// read. A missing, unreadable or malformed file is reported (a JSON syntax
// error with its line and column) and the last good set is kept; an empty
// endpoint list is rejected the same way, since a half-written file must
// never empty a service.
#ifndef MESHLIB_DISCOVERY_FILE_FILE_RESOLVER_H_
#define MESHLIB_DISCOVERY_FILE_FILE_RESOLVER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "meshlib/discovery/resolver.h"

namespace meshlib::discovery {

// Parses the file's text; errors name `what` (the file) and where.
absl::StatusOr<std::vector<Endpoint>> ParseEndpointFile(absl::string_view text,
                                                        absl::string_view what);

std::unique_ptr<ResolverFactory> MakeFileResolverFactory();

}  // namespace meshlib::discovery

#endif  // MESHLIB_DISCOVERY_FILE_FILE_RESOLVER_H_
