/* The host's memory as Linux reports it, for sizing caches from what is free. */
#ifndef MT_UTIL_HOST_MEMORY_H
#define MT_UTIL_HOST_MEMORY_H

/* MemAvailable of /proc/meminfo in bytes: what can be allocated without swapping; 0 when unknown. */
double mt_host_memory_available(void);

#endif
