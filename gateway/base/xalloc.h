// xalloc: allocation where running out of memory leaves nothing sensible to do (loading a
// config, starting workers, commands): a message and abort, as redis's zmalloc does.
// The data path does not use these: a tunnel that cannot get memory fails alone with
// internal_error and the process serves everyone else (ARCHITECTURE.md, "Running out of
// memory").
#ifndef MTLSGW_XALLOC_H
#define MTLSGW_XALLOC_H

#include <stddef.h>

void *gw_xmalloc(size_t size);
void *gw_xcalloc(size_t n, size_t size);
void *gw_xrealloc(void *p, size_t size);
char *gw_xstrdup(const char *s);
char *gw_xstrndup(const char *s, size_t n);

#endif
