/* What the unit tests of src/ share: a check that counts and reports its
 * failures without stopping, and the runner of named cases
 * (`unit_x CASE`, or every case without an argument). */
#ifndef UNIT_CHECK_H
#define UNIT_CHECK_H

#include <stdio.h>
#include <string.h>

static int unit_failures;

#define CHECK(cond, ...)                                                                 \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            unit_failures++;                                                             \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                         \
            fprintf(stderr, __VA_ARGS__);                                                \
            fputc('\n', stderr);                                                         \
        }                                                                                \
    } while (0)

typedef struct unit_case {
    const char *name;
    void (*fn)(void);
} unit_case;

/* Runs the case named by argv[1], or all; 0 when every check passed. */
static inline int unit_run(const char *prog, const unit_case *cases, size_t n, int argc,
                           char **argv)
{
    int ran = 0;

    for (size_t i = 0; i < n; i++) {
        if (argc > 1 && strcmp(argv[1], cases[i].name) != 0)
            continue;
        cases[i].fn();
        ran++;
        if (unit_failures != 0) {
            fprintf(stderr, "%s %s: %d failures\n", prog, cases[i].name, unit_failures);
            return 1;
        }
        printf("PASS: %s %s\n", prog, cases[i].name);
    }
    if (ran == 0) {
        fprintf(stderr, "%s: no case %s\n", prog, argc > 1 ? argv[1] : "");
        return 2;
    }
    return 0;
}

#endif
