/*
 * PIN sources: an environment variable, or a file only its owner can read. Never the command line,
 * never a recipe, never a URI. The PIN goes straight into a kiln_secret; messages name the source and
 * never the value.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hsm_internal.h"
#include "kiln/secret.h"

/* Drop one trailing "\n" or "\r\n": editors add it and it is never part of a PIN. */
static void strip_newline(struct kiln_secret *s)
{
        if (s->len > 0 && s->p[s->len - 1] == '\n') {
                s->p[--s->len] = 0;
                if (s->len > 0 && s->p[s->len - 1] == '\r')
                        s->p[--s->len] = 0;
        }
}

static int pin_from_env(const char *var, struct kiln_secret **ret)
{
        const char *v = getenv(var);
        size_t n;

        if (v == NULL)
                return kiln_fail(KILN_E_HSM_PIN_SOURCE, "PIN environment variable '%s' is not set",
                                 var);
        n = strnlen(v, KILN_PIN_MAX + 1);
        if (n == 0)
                return kiln_fail(KILN_E_HSM_PIN_SOURCE, "PIN environment variable '%s' is empty",
                                 var);
        if (n > KILN_PIN_MAX)
                return kiln_fail(KILN_E_HSM_PIN_SOURCE,
                                 "PIN in environment variable '%s' is longer than %u bytes", var,
                                 KILN_PIN_MAX);
        if (kiln_secret_from(v, n, ret) < 0)
                return KILN_E_NOMEM;
        return KILN_OK;
}

static int pin_from_file(const char *path, struct kiln_secret **ret)
{
        struct kiln_secret *s = NULL;
        struct stat st;
        int fd = -1, r;

        /* O_NOFOLLOW: the checks below must be about the file itself, not a link to it */
        fd = open(path, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
        if (fd < 0) {
                if (errno == ELOOP)
                        r = kiln_fail(KILN_E_HSM_PIN_SOURCE,
                                      "PIN file '%s' is a symbolic link: refused", path);
                else
                        r = kiln_fail(KILN_E_HSM_PIN_SOURCE, "cannot open PIN file '%s': %s",
                                      path, strerror(errno));
                goto out;
        }
        if (fstat(fd, &st) < 0) {
                r = kiln_fail(KILN_E_HSM_PIN_SOURCE, "cannot stat PIN file '%s': %s", path,
                              strerror(errno));
                goto out;
        }
        if (!S_ISREG(st.st_mode)) {
                r = kiln_fail(KILN_E_HSM_PIN_SOURCE, "PIN file '%s' is not a regular file", path);
                goto out;
        }
        if (st.st_uid != geteuid()) {
                r = kiln_fail(KILN_E_HSM_PIN_SOURCE,
                              "PIN file '%s' is owned by uid %lu, not by the user running kiln "
                              "(uid %lu): refused",
                              path, (unsigned long)st.st_uid, (unsigned long)geteuid());
                goto out;
        }
        if (st.st_mode & (S_IRWXG | S_IRWXO)) {
                r = kiln_fail(KILN_E_HSM_PIN_SOURCE,
                              "PIN file '%s' has mode %04o: it must be readable only by its owner "
                              "(chmod 600 '%s')",
                              path, (unsigned)(st.st_mode & 07777), path);
                goto out;
        }
        if (st.st_size > (off_t)KILN_PIN_MAX + 2) {
                r = kiln_fail(KILN_E_HSM_PIN_SOURCE, "PIN file '%s' is larger than %u bytes", path,
                              KILN_PIN_MAX);
                goto out;
        }
        r = kiln_secret_new(KILN_PIN_MAX + 3, &s);
        if (r < 0)
                goto out;
        /* read until EOF, never past the secret's capacity */
        for (;;) {
                ssize_t n = read(fd, s->p + s->len, s->cap - s->len);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        r = kiln_fail(KILN_E_HSM_PIN_SOURCE, "cannot read PIN file '%s': %s",
                                      path, strerror(errno));
                        goto out;
                }
                if (n == 0)
                        break;
                s->len += (size_t)n;
                if (s->len == s->cap) {
                        r = kiln_fail(KILN_E_HSM_PIN_SOURCE,
                                      "PIN file '%s' is larger than %u bytes", path,
                                      KILN_PIN_MAX);
                        goto out;
                }
        }
        strip_newline(s);
        if (s->len == 0) {
                r = kiln_fail(KILN_E_HSM_PIN_SOURCE, "PIN file '%s' is empty", path);
                goto out;
        }
        if (s->len > KILN_PIN_MAX) {
                r = kiln_fail(KILN_E_HSM_PIN_SOURCE, "PIN in file '%s' is longer than %u bytes",
                              path, KILN_PIN_MAX);
                goto out;
        }
        *ret = s;
        s = NULL;
        r = KILN_OK;
out:
        kiln_secret_free(s);
        if (fd >= 0)
                close(fd);
        return r;
}

int hsm_pin_load(enum hsm_pin_source src, const char *ref, struct kiln_secret **ret)
{
        if (ref == NULL || ref[0] == '\0')
                return kiln_fail(KILN_E_HSM_PIN_SOURCE, "no PIN source given");
        switch (src) {
        case HSM_PIN_ENV:
                return pin_from_env(ref, ret);
        case HSM_PIN_FILE:
                return pin_from_file(ref, ret);
        default:
                return kiln_fail(KILN_E_HSM_PIN_SOURCE, "no PIN source given");
        }
}
