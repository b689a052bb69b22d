/*
 * PKCS#11 modules: dlopen once per path, C_Initialize with CKF_OS_LOCKING_OK, shared by every token
 * of the module in this process, C_Finalize when the last user is gone.
 *
 * A module is never dlclose()d. Modules create thread keys and atexit handlers (SoftHSM and the
 * OpenSSL it links do), and unloading them while the process lives is a known source of crashes;
 * keeping the mapping costs nothing and a later hsm_module_get() of the same path reuses it.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hsm_internal.h"
#include "kiln/log.h"

#define MODULES_MAX 8

static pthread_mutex_t modules_lock = PTHREAD_MUTEX_INITIALIZER;
static struct hsm_module *modules[MODULES_MAX];

static struct hsm_module *module_lookup(const char *path)
{
        for (size_t i = 0; i < MODULES_MAX; i++)
                if (modules[i] != NULL && strcmp(modules[i]->path, path) == 0)
                        return modules[i];
        return NULL;
}

static int module_load(const char *path, struct hsm_module **ret)
{
        CK_RV (*get_list)(CK_FUNCTION_LIST_PTR_PTR) = NULL;
        struct hsm_module *m = NULL;
        void *sym;
        size_t slot = MODULES_MAX;
        CK_RV rv;
        int r;

        for (size_t i = 0; i < MODULES_MAX; i++) {
                if (modules[i] == NULL) {
                        slot = i;
                        break;
                }
        }
        if (slot == MODULES_MAX) {
                r = kiln_fail(KILN_E_LIMIT, "more than %d PKCS#11 modules in one process",
                              MODULES_MAX);
                goto out;
        }
        m = kiln_calloc(1, sizeof(*m));
        if (m == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        if (kiln_strlcpy(m->path, path, sizeof(m->path)) < 0) {
                r = kiln_fail(KILN_E_HSM_MODULE, "PKCS#11 module path too long");
                goto out;
        }
        m->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (m->dl == NULL) {
                const char *e = dlerror();

                r = kiln_fail(KILN_E_HSM_MODULE, "cannot load PKCS#11 module '%s': %s", path,
                              e ? e : "dlopen failed");
                goto out;
        }
        sym = dlsym(m->dl, "C_GetFunctionList");
        if (sym == NULL) {
                r = kiln_fail(KILN_E_HSM_MODULE,
                              "'%s' is not a PKCS#11 module: no C_GetFunctionList", path);
                goto out;
        }
        /* POSIX guarantees a data pointer from dlsym converts to a function pointer */
        memcpy(&get_list, &sym, sizeof(get_list));
        rv = get_list(&m->fl);
        if (rv != CKR_OK || m->fl == NULL) {
                r = hsm_p11_fail(KILN_E_HSM_MODULE, rv, "C_GetFunctionList of '%s' failed", path);
                goto out;
        }
        if (m->fl->version.major < 2) {
                r = kiln_fail(KILN_E_HSM_MODULE, "'%s' implements PKCS#11 %u.%u; 2.x is needed",
                              path, m->fl->version.major, m->fl->version.minor);
                goto out;
        }
        modules[slot] = m;
        *ret = m;
        m = NULL;
        r = KILN_OK;
out:
        if (m != NULL) {
                /* never initialised: unloading is safe here */
                if (m->dl != NULL)
                        dlclose(m->dl);
                kiln_free(m);
        }
        return r;
}

int hsm_module_get(const char *path, struct hsm_module **ret)
{
        CK_C_INITIALIZE_ARGS args;
        struct hsm_module *m;
        const char *conf;
        CK_RV rv;
        int r;

        if (path == NULL || path[0] != '/')
                return kiln_fail(KILN_E_HSM_MODULE,
                                 "PKCS#11 module path '%s' must be absolute",
                                 path ? path : "(none)");
        pthread_mutex_lock(&modules_lock);
        m = module_lookup(path);
        if (m == NULL) {
                r = module_load(path, &m);
                if (r < 0)
                        goto out;
        }
        if (!m->initialized) {
                memset(&args, 0, sizeof(args));
                args.flags = CKF_OS_LOCKING_OK;
                rv = m->fl->C_Initialize(&args);
                if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
                        r = hsm_p11_fail(KILN_E_HSM_MODULE, rv, "C_Initialize of '%s' failed",
                                         path);
                        goto out;
                }
                /* someone else in the process initialised it: they finalise it */
                m->finalize = rv == CKR_OK;
                m->initialized = 1;
                conf = getenv("SOFTHSM2_CONF");
                kiln_strlcpy(m->conf, conf ? conf : "", sizeof(m->conf));
                kiln_debug("hsm: initialised PKCS#11 module '%s'", path);
        }
        m->refs++;
        *ret = m;
        r = KILN_OK;
out:
        pthread_mutex_unlock(&modules_lock);
        return r;
}

void hsm_module_put(struct hsm_module *m)
{
        if (m == NULL)
                return;
        pthread_mutex_lock(&modules_lock);
        if (m->refs > 0 && --m->refs == 0 && m->initialized) {
                if (m->finalize)
                        (void)m->fl->C_Finalize(NULL);
                m->initialized = 0;
                m->finalize = 0;
        }
        pthread_mutex_unlock(&modules_lock);
}

int hsm_module_use_conf(const char *path, const char *conf)
{
        struct hsm_module *m;
        int r = KILN_OK;

        pthread_mutex_lock(&modules_lock);
        m = module_lookup(path);
        if (m != NULL && m->initialized && strcmp(m->conf, conf) != 0) {
                r = kiln_fail(KILN_E_HSM_MODULE,
                              "'%s' is in use with SOFTHSM2_CONF='%s' in this process; close its "
                              "tokens before using '%s'",
                              path, m->conf, conf);
        } else if (setenv("SOFTHSM2_CONF", conf, 1) != 0) {
                r = kiln_fail(KILN_E_IO, "cannot set SOFTHSM2_CONF: %s", strerror(errno));
        }
        pthread_mutex_unlock(&modules_lock);
        return r;
}
