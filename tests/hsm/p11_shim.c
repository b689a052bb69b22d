/*
 * A PKCS#11 module for tests: forwards every call to SoftHSM and counts C_Login calls, so a test can
 * prove a wrong PIN is tried exactly once and a refused login never reaches the token. The count is
 * read with dlsym(handle, "kiln_shim_login_count") on the same dlopen handle kiln uses.
 *
 * KILN_SHIM_TARGET names the real module (default: SoftHSM's Debian path).
 */
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

#define SHIM_DEFAULT_TARGET "/usr/lib/softhsm/libsofthsm2.so"

static CK_FUNCTION_LIST shim_list;
static CK_FUNCTION_LIST_PTR real;
static atomic_ulong login_count;

unsigned long kiln_shim_login_count(void);
CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ret);

unsigned long kiln_shim_login_count(void)
{
        return atomic_load(&login_count);
}

static CK_RV shim_login(CK_SESSION_HANDLE s, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin,
                        CK_ULONG pin_len)
{
        atomic_fetch_add(&login_count, 1);
        return real->C_Login(s, user, pin, pin_len);
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ret)
{
        CK_RV (*get)(CK_FUNCTION_LIST_PTR_PTR) = NULL;
        const char *target = getenv("KILN_SHIM_TARGET");
        void *dl, *sym;
        CK_RV rv;

        if (ret == NULL)
                return CKR_ARGUMENTS_BAD;
        if (real == NULL) {
                dl = dlopen(target ? target : SHIM_DEFAULT_TARGET, RTLD_NOW | RTLD_LOCAL);
                if (dl == NULL)
                        return CKR_GENERAL_ERROR;
                sym = dlsym(dl, "C_GetFunctionList");
                if (sym == NULL)
                        return CKR_GENERAL_ERROR;
                memcpy(&get, &sym, sizeof(get));
                rv = get(&real);
                if (rv != CKR_OK)
                        return rv;
                shim_list = *real;
                shim_list.C_Login = shim_login;
        }
        *ret = &shim_list;
        return CKR_OK;
}
