/* Error reporting: functions that can fail return 0 on success or -1 after writing a
 * human-readable message (naming the bad input) into an mt_err the caller owns. */
#ifndef MT_UTIL_ERR_H
#define MT_UTIL_ERR_H

#define MT_ERR_LEN 1024

typedef struct mt_err {
    char msg[MT_ERR_LEN];
} mt_err;

/* Formats into err (if not NULL) and returns -1, so callers can `return mt_errf(...)`. */
int mt_errf(mt_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Logging to stderr; stdout is reserved for results. */
void mt_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
