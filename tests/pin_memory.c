/*
 * Where the PIN lives in memory (DESIGN §6: "a PIN kept for re-login lives in
 * locked memory excluded from core dumps"). After a login through hsmprov,
 * the process's memory is searched for the PIN (/proc/self/mem, every
 * readable mapping) and each copy found is looked up in /proc/self/smaps:
 * its mapping must say "dd" (not dumped) in VmFlags, and "lo" (locked) when
 * this process can lock memory at all (RLIMIT_MEMLOCK; a sanitizer's
 * runtime makes mlock do nothing).
 *
 *   pin_memory good REVERSED_PIN   the PIN is right: the remembered PIN is
 *                                  found, only in such memory; then in a fork
 *                                  child, which signs (logging in again with
 *                                  it) and finds it in such memory too
 *                                  (memory locks are not inherited: hsmprov
 *                                  locks it again in the child).
 *   pin_memory bad REVERSED_PIN    the PIN is wrong: the login fails, and the
 *                                  rejected PIN, remembered so that it is
 *                                  never offered again, is in such memory.
 *
 * The PIN comes reversed, so that this program holds no copy of it but the
 * one it searches with, in pages of its own that the search skips.
 */
#include "conc_util.h"

#include <openssl/err.h>
#include <openssl/store.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHUNK (1UL << 20)
#define MAX_SCAN (256UL << 20) /* larger mappings are reserved space, not data */

typedef struct vma {
    uintptr_t start, end;
    int readable;
    char flags[128]; /* VmFlags */
    char name[64];
} vma;

static vma *vmas;
static size_t n_vmas;
/* Our own pages: the needle and the read buffer, skipped by the search. */
static unsigned char *own;
static size_t own_len;
static const char *who = "parent";

static void read_smaps(void)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    size_t cap = 0;

    n_vmas = 0;
    if (f == NULL) {
        ct_fail("%s: cannot open /proc/self/smaps", who);
        return;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned long s, e;
        char perms[8], name[256] = "";

        if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %255[^\n]", &s, &e, perms, name) >= 3) {
            if (n_vmas == cap) {
                cap = cap ? cap * 2 : 256;
                vmas = realloc(vmas, cap * sizeof(*vmas));
                if (vmas == NULL)
                    abort();
            }
            memset(&vmas[n_vmas], 0, sizeof(vmas[0]));
            vmas[n_vmas].start = s;
            vmas[n_vmas].end = e;
            vmas[n_vmas].readable = perms[0] == 'r';
            snprintf(vmas[n_vmas].name, sizeof(vmas[0].name), "%.60s", name);
            n_vmas++;
        } else if (strncmp(line, "VmFlags:", 8) == 0 && n_vmas > 0) {
            snprintf(vmas[n_vmas - 1].flags, sizeof(vmas[0].flags), "%.120s", line + 8);
        }
    }
    fclose(f);
}

static int has_flag(const vma *v, const char *flag)
{
    char want[8];

    snprintf(want, sizeof(want), " %s", flag);
    for (const char *p = v->flags; (p = strstr(p, want)) != NULL; p++)
        if (p[3] == ' ' || p[3] == '\n' || p[3] == '\0')
            return 1;
    return 0;
}

/* Searches every readable mapping for the needle; checks each copy's
 * mapping. Returns the number of copies found outside our own pages. */
static int check_copies(const unsigned char *needle, size_t nlen, int want_locked)
{
    unsigned char *buf = own + getpagesize();
    FILE *mem = fopen("/proc/self/mem", "r");
    int found = 0;

    if (mem == NULL) {
        ct_fail("%s: cannot open /proc/self/mem", who);
        return 0;
    }
    read_smaps();
    for (size_t i = 0; i < n_vmas; i++) {
        const vma *v = &vmas[i];

        if (!v->readable || v->end - v->start > MAX_SCAN ||
            strcmp(v->name, "[vvar]") == 0)
            continue;
        for (uintptr_t at = v->start; at < v->end; at += CHUNK - nlen) {
            size_t len = v->end - at < CHUNK ? v->end - at : CHUNK;
            ssize_t got = pread(fileno(mem), buf, len, (off_t)at);

            if (got < (ssize_t)nlen)
                break;
            for (unsigned char *p = buf;
                 (p = memmem(p, (size_t)got - (size_t)(p - buf), needle, nlen)) != NULL;
                 p++) {
                uintptr_t addr = at + (uintptr_t)(p - buf);

                if (addr >= (uintptr_t)own && addr < (uintptr_t)own + own_len)
                    continue;
                found++;
                printf("%s: a copy of the PIN at %#lx in %lx-%lx %s, VmFlags:%s", who,
                       (unsigned long)addr, (unsigned long)v->start,
                       (unsigned long)v->end, v->name, v->flags);
                if (!has_flag(v, "dd"))
                    ct_fail("%s: a copy of the PIN at %#lx is in memory that core dumps "
                            "include (no \"dd\" in VmFlags)",
                            who, (unsigned long)addr);
                if (want_locked && !has_flag(v, "lo"))
                    ct_fail("%s: a copy of the PIN at %#lx is in memory that is not "
                            "locked (no \"lo\" in VmFlags)",
                            who, (unsigned long)addr);
            }
            if (at + len >= v->end)
                break;
        }
    }
    fclose(mem);
    return found;
}

/* Whether this process can lock a page: RLIMIT_MEMLOCK may not allow it,
 * and under a sanitizer mlock() does nothing (its runtime intercepts it).
 * Tried on a page of our own, and checked in smaps. */
static int can_lock(void)
{
    size_t page = (size_t)getpagesize();
    unsigned char *p =
        mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int locked = 0;

    if (p == MAP_FAILED)
        return 0;
    if (mlock(p, page) == 0) {
        read_smaps();
        for (size_t i = 0; i < n_vmas; i++)
            if (vmas[i].start <= (uintptr_t)p && (uintptr_t)p < vmas[i].end)
                locked = has_flag(&vmas[i], "lo");
        munlock(p, page);
    }
    munmap(p, page);
    return locked;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    const char *rev = argc > 2 ? argv[2] : "";
    size_t nlen = strlen(rev);
    int locked = can_lock(), status = 0;
    ct_key key;
    pid_t pid;

    if (nlen == 0 || (strcmp(mode, "good") != 0 && strcmp(mode, "bad") != 0)) {
        fprintf(stderr, "usage: pin_memory good|bad REVERSED_PIN\n");
        return 2;
    }
    ct_watchdog(120, "pin_memory");
    own_len = (size_t)getpagesize() + CHUNK;
    own = mmap(NULL, own_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (own == MAP_FAILED)
        return 2;
    for (size_t i = 0; i < nlen; i++)
        own[i] = (unsigned char)rev[nlen - 1 - i];
    printf("this process %s lock memory: %s\n", locked ? "can" : "cannot",
           locked ? "copies must be locked" : "not checked");
    if (!ct_init())
        return ct_result("pin_memory");

    if (strcmp(mode, "bad") == 0) {
        OSSL_STORE_CTX *st = OSSL_STORE_open("pkcs11:token=demo;object=ec;type=private",
                                             NULL, NULL, NULL, NULL);

        if (st != NULL && OSSL_STORE_load(st) != NULL)
            ct_fail("the key loaded with a wrong PIN");
        OSSL_STORE_close(st);
        ERR_clear_error();
        if (check_copies(own, nlen, locked) == 0)
            ct_fail("the rejected PIN is not remembered anywhere");
        return ct_result("pin_memory bad");
    }

    if (!ct_key_load(&key, "ec"))
        return ct_result("pin_memory good");
    ct_sign_check(&(ct_alg){&key, 0}, "parent, before fork");
    if (check_copies(own, nlen, locked) == 0)
        ct_fail("parent: the PIN that worked is not remembered anywhere");

    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        who = "child";
        /* The first use in the child logs in again with the remembered PIN. */
        ct_sign_check(&(ct_alg){&key, 0}, "child, after fork");
        if (check_copies(own, nlen, locked) == 0)
            ct_fail("child: the remembered PIN is not there");
        fflush(stdout);
        _exit(ct_failures() == 0 ? 0 : 1);
    }
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0)
        ct_fail("the fork child failed (status %d)", status);
    ct_key_free(&key);
    return ct_result("pin_memory good");
}
