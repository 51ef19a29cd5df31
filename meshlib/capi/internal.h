// C++-only access to the C ABI's handles, for meshlib's own tests and
// benchmarks linked with //meshlib/capi:capi (not part of libmeshlib.so's
// exports, which are the meshlib_* functions of meshlib.h only).
#ifndef MESHLIB_CAPI_INTERNAL_H_
#define MESHLIB_CAPI_INTERNAL_H_

#include <memory>

#include "meshlib/capi/meshlib.h"
#include "meshlib/mesh/mesh.h"

namespace meshlib::capi {

// A mesh handle over a mesh made in C++ (e.g. with MeshOptions that a
// JSON document cannot express, such as an in-memory channel factory).
// Freed with meshlib_mesh_free like any other.
meshlib_mesh_t* WrapMesh(std::unique_ptr<mesh::Mesh> mesh);

}  // namespace meshlib::capi

#endif  // MESHLIB_CAPI_INTERNAL_H_
