#include "p11_secmem.h"

#include "p11_module.h"

#include <openssl/crypto.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* At the start of the mapping, before the secret: how much to unmap. */
typedef struct secmem_head {
    size_t map_len;
} secmem_head;

char *p11_secmem_dup(const char *p, size_t len)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t need = sizeof(secmem_head) + len + 1, map_len;
    secmem_head *h;
    char *copy;

    if (need < len)
        return NULL;
    map_len = (need + page - 1) / page * page;
    h = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (h == MAP_FAILED)
        return NULL;
    /* Before the secret is written: a page that is never locked may be
     * swapped out, and then its copy on disk outlives our wipe. */
    if (mlock(h, map_len) != 0)
        p11_debug("cannot lock %zu bytes for a PIN (RLIMIT_MEMLOCK?): kept unlocked",
                  map_len);
    if (madvise(h, map_len, MADV_DONTDUMP) != 0)
        p11_debug("cannot exclude a PIN's memory from core dumps");
    h->map_len = map_len;
    copy = (char *)(h + 1);
    memcpy(copy, p, len);
    copy[len] = '\0';
    return copy;
}

void p11_secmem_free(char *p)
{
    secmem_head *h;
    size_t map_len;

    if (p == NULL)
        return;
    h = (secmem_head *)p - 1;
    map_len = h->map_len;
    OPENSSL_cleanse(h, map_len);
    munlock(h, map_len);
    munmap(h, map_len);
}

void p11_secmem_relock(char *p)
{
    secmem_head *h;

    if (p == NULL)
        return;
    h = (secmem_head *)p - 1;
    mlock(h, h->map_len);
}
