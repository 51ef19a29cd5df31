/* echo_call: calls echo_server through meshlib from C (meshlib/capi/meshlib.h,
 * linked against libmeshlib.so).
 *
 *   bazel run //examples/c:echo_call -- 127.0.0.1:7001 hello
 *
 * Prints "OK from ADDRESS: REPLY", or the error's code and message and
 * exits 1. */
#include <stdio.h>
#include <string.h>

#include "meshlib/capi/meshlib.h"

static int fail(meshlib_error_t* err) {
  fprintf(stderr, "%s: %s\n", meshlib_code_name(meshlib_error_code(err)),
          meshlib_error_message(err));
  meshlib_error_free(err);
  return 1;
}

int main(int argc, char** argv) {
  const char* address;
  const char* message;
  char config[512];
  meshlib_mesh_t* mesh = NULL;
  meshlib_client_t* echo = NULL;
  meshlib_reply_t* reply = NULL;
  meshlib_call_options_t options;
  meshlib_error_t* err;
  const uint8_t* payload;
  size_t len = 0;

  if (argc < 2) {
    fprintf(stderr, "usage: %s HOST:PORT [MESSAGE]\n", argv[0]);
    return 2;
  }
  address = argv[1];
  message = argc > 2 ? argv[2] : "hello from C";
  snprintf(config, sizeof config,
           "{\"services\": {\"echo\": {\"discovery\": {\"static\": {\"endpoints\": [\"%s\"]}},"
           " \"timeout\": \"2s\", \"retry\": {\"max_attempts\": 3}}}}",
           address);
  err = meshlib_mesh_new_json(config, strlen(config), &mesh);
  if (err != NULL) return fail(err);
  err = meshlib_mesh_client(mesh, "echo", &echo);
  if (err != NULL) {
    meshlib_mesh_free(mesh);
    return fail(err);
  }
  memset(&options, 0, sizeof options);
  options.struct_size = sizeof options;
  options.idempotent = 1;
  err = meshlib_client_call(echo, "Echo/Say", message, strlen(message), &options, &reply);
  if (err != NULL) {
    meshlib_client_free(echo);
    meshlib_mesh_free(mesh);
    return fail(err);
  }
  payload = meshlib_reply_payload(reply, &len);
  printf("OK from %s: %.*s\n", meshlib_reply_endpoint(reply), (int)len,
         payload != NULL ? (const char*)payload : "");
  meshlib_reply_free(reply);
  meshlib_client_free(echo);
  meshlib_mesh_free(mesh);
  return 0;
}
