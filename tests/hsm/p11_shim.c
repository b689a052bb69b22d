/*
 * A PKCS#11 module for tests: forwards every call to SoftHSM and counts C_Login calls, so a test can
 * prove a wrong PIN is tried exactly once and a refused login never reaches the token. The count is
 * read with dlsym(handle, "kiln_shim_login_count") on the same dlopen handle kiln uses.
 *
 * KILN_SHIM_TARGET names the real module (default: SoftHSM's Debian path).
 * KILN_SHIM_FAIL_SIGN_AFTER=N makes every C_Sign after the first N answer CKR_DEVICE_ERROR: an HSM
 * that stops signing in the middle of a run.
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
static atomic_ulong sign_count;
static long fail_sign_after = -1;

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

static CK_RV shim_sign(CK_SESSION_HANDLE s, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR sig,
                       CK_ULONG_PTR sig_len)
{
        /* let the token finish the operation (a failed C_Sign ends it, as PKCS#11 says), then
         * report the failure; a size query (sig NULL) is not a signature */
        CK_RV rv = real->C_Sign(s, data, len, sig, sig_len);

        if (rv == CKR_OK && sig != NULL && fail_sign_after >= 0 &&
            atomic_fetch_add(&sign_count, 1) >= (unsigned long)fail_sign_after)
                return CKR_DEVICE_ERROR;
        return rv;
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
                shim_list.C_Sign = shim_sign;
                {
                        const char *after = getenv("KILN_SHIM_FAIL_SIGN_AFTER");

                        if (after != NULL && *after >= '0' && *after <= '9')
                                fail_sign_after = strtol(after, NULL, 10);
                }
        }
        *ret = &shim_list;
        return CKR_OK;
}
