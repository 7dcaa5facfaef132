/* Memory for the secrets we keep (the PIN remembered for re-login): its own
 * pages, locked in RAM where RLIMIT_MEMLOCK allows, left out of core dumps,
 * and wiped before they are given back.
 *
 * Not OpenSSL's secure heap: that exists only if the application called
 * CRYPTO_secure_malloc_init, and a provider cannot size or start a
 * process-wide heap on the application's behalf. Not MADV_DONTFORK or
 * MADV_WIPEONFORK either: a fork child logs in again with the same PIN. */
#ifndef P11_SECMEM_H
#define P11_SECMEM_H

#include <stddef.h>

/* A NUL-terminated copy of len bytes of p in pages of its own; NULL if the
 * pages cannot be had. Failing to lock or to exclude them from core dumps
 * is not an error (the limit is the administrator's): the copy is made. */
char *p11_secmem_dup(const char *p, size_t len);
/* Wipes and unmaps a copy from p11_secmem_dup (NULL: nothing). */
void p11_secmem_free(char *p);
/* In a fork child: memory locks are not inherited, so lock the copy again. */
void p11_secmem_relock(char *p);

#endif
