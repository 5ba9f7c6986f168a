/* Group setup and teardown of a server test (include after cmocka.h): g_bin is $MOETRACE_BIN; when it
 * is unset nothing is set up (the tests skip), otherwise libcurl is initialised and the scratch
 * folder g_dir of tmp_dir.h is made, and removed with its content by server_teardown. */
#ifndef MT_TESTS_SERVER_SETUP_H
#define MT_TESTS_SERVER_SETUP_H

#include <stdlib.h>

#include "support/http_client.h"
#include "tmp_dir.h"

static const char *g_bin;

/* Called by the test's group setup with the name prefix of its scratch folder; 0 on success. */
static inline int server_setup(const char *tmp_prefix) {
    g_bin = getenv("MOETRACE_BIN");
    if (!g_bin) return 0;
    mt_http_global_init();
    return tmp_dir_make(tmp_prefix);
}

/* A cmocka group teardown. */
static inline int server_teardown(void **state) {
    (void)state;
    return g_bin ? tmp_dir_remove() : 0;
}

#endif
