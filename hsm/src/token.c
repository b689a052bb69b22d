/*
 * Tokens: selection by URI, mechanism checks, the logged-in session pool, random bytes.
 *
 * One login serves the whole pool: PKCS#11 login state belongs to the application and the token, not
 * to a session, so C_Login on one session logs in every session of the token. The pool is a stack
 * of idle session handles under a mutex; a borrower waits on a condition variable with a deadline.
 * There is no C_Logout: closing the last session logs the token out, and an explicit logout would
 * also log out another struct hsm_token open on the same token in this process.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>

#include "hsm_internal.h"
#include "kiln/log.h"
#include "kiln/secret.h"

#define SLOTS_MAX 256u       /* slots we look at in one module */
#define MECHANISMS_MAX 4096u /* mechanisms we accept in one list */

int hsm_p11_fail(int code, CK_RV rv, const char *fmt, ...)
{
        char msg[384];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        return kiln_fail(code, "%s: %s", msg, hsm_rv_name(rv));
}

int hsm_ossl_fail(int code, const char *fmt, ...)
{
        char msg[384], reason[160] = "";
        unsigned long e = ERR_peek_last_error();
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (e != 0)
                ERR_error_string_n(e, reason, sizeof(reason));
        ERR_clear_error();
        if (reason[0] == '\0')
                return kiln_fail(code, "%s", msg);
        return kiln_fail(code, "%s: %s", msg, reason);
}

void hsm_p11_text(const unsigned char *p, size_t n, char *out, size_t cap)
{
        size_t len = 0;

        if (cap == 0)
                return;
        for (size_t i = 0; i < n && len + 1 < cap; i++)
                /* token text is hostile: keep it printable for messages and terminals */
                out[len++] = (p[i] >= 0x20 && p[i] < 0x7f) ? (char)p[i] : (p[i] ? '?' : ' ');
        while (len > 0 && out[len - 1] == ' ')
                len--;
        out[len] = '\0';
}

int hsm_pin_flags_check(const CK_TOKEN_INFO *ti)
{
        char label[33];

        hsm_p11_text(ti->label, sizeof(ti->label), label, sizeof(label));
        if (ti->flags & CKF_USER_PIN_LOCKED)
                return kiln_fail(KILN_E_HSM_PIN_LOCKED,
                                 "token '%s': the user PIN is locked (CKF_USER_PIN_LOCKED): login "
                                 "refused; the security officer must unlock it",
                                 label);
        if (ti->flags & CKF_USER_PIN_FINAL_TRY)
                return kiln_fail(KILN_E_HSM_PIN_LOCKED,
                                 "token '%s': one more wrong PIN locks it (CKF_USER_PIN_FINAL_TRY): "
                                 "login refused; check the PIN, then log in once by hand to reset "
                                 "the counter",
                                 label);
        if (ti->flags & CKF_USER_PIN_COUNT_LOW)
                return kiln_fail(KILN_E_HSM_PIN_LOCKED,
                                 "token '%s' reports failed PIN attempts (CKF_USER_PIN_COUNT_LOW): "
                                 "login refused so no script can lock it; check the PIN, then log "
                                 "in once by hand (e.g. pkcs11-tool --login) to reset the counter",
                                 label);
        if ((ti->flags & CKF_LOGIN_REQUIRED) && !(ti->flags & CKF_USER_PIN_INITIALIZED))
                return kiln_fail(KILN_E_HSM_TOKEN, "token '%s' has no user PIN set", label);
        return KILN_OK;
}

int hsm_token_matches_uri(const struct hsm_token *t, const struct hsm_uri *u)
{
        if ((u->has & HSM_URI_TOKEN) && strcmp(u->token, t->label) != 0)
                return 0;
        if ((u->has & HSM_URI_MANUFACTURER) && strcmp(u->manufacturer, t->manufacturer) != 0)
                return 0;
        if ((u->has & HSM_URI_SERIAL) && strcmp(u->serial, t->serial) != 0)
                return 0;
        if ((u->has & HSM_URI_MODEL) && strcmp(u->model, t->model) != 0)
                return 0;
        if ((u->has & HSM_URI_SLOT_ID) && u->slot_id != t->slot)
                return 0;
        if ((u->has & HSM_URI_SLOT_DESCRIPTION) &&
            strcmp(u->slot_description, t->slot_description) != 0)
                return 0;
        if ((u->has & HSM_URI_SLOT_MANUFACTURER) &&
            strcmp(u->slot_manufacturer, t->slot_manufacturer) != 0)
                return 0;
        return 1;
}

/* Read token and slot text of one slot into t (used for matching before t is chosen). */
static int slot_describe(struct hsm_token *t, CK_SLOT_ID slot, CK_TOKEN_INFO *ti)
{
        CK_SLOT_INFO si;
        CK_RV rv;

        rv = t->fl->C_GetTokenInfo(slot, ti);
        if (rv != CKR_OK)
                return hsm_p11_fail(KILN_E_HSM_TOKEN, rv, "C_GetTokenInfo of slot %lu failed",
                                    (unsigned long)slot);
        rv = t->fl->C_GetSlotInfo(slot, &si);
        if (rv != CKR_OK)
                return hsm_p11_fail(KILN_E_HSM_TOKEN, rv, "C_GetSlotInfo of slot %lu failed",
                                    (unsigned long)slot);
        t->slot = slot;
        hsm_p11_text(ti->label, sizeof(ti->label), t->label, sizeof(t->label));
        hsm_p11_text(ti->manufacturerID, sizeof(ti->manufacturerID), t->manufacturer,
                     sizeof(t->manufacturer));
        hsm_p11_text(ti->model, sizeof(ti->model), t->model, sizeof(t->model));
        hsm_p11_text(ti->serialNumber, sizeof(ti->serialNumber), t->serial, sizeof(t->serial));
        hsm_p11_text(si.slotDescription, sizeof(si.slotDescription), t->slot_description,
                     sizeof(t->slot_description));
        hsm_p11_text(si.manufacturerID, sizeof(si.manufacturerID), t->slot_manufacturer,
                     sizeof(t->slot_manufacturer));
        return KILN_OK;
}

/* Choose the one slot whose token matches u; leaves its description in t. */
static int token_select(struct hsm_token *t, const struct hsm_uri *u, const char *uri)
{
        CK_SLOT_ID *slots = NULL, chosen = 0;
        CK_ULONG n = 0;
        CK_TOKEN_INFO ti;
        char seen[256] = "";
        size_t matches = 0;
        CK_RV rv;
        int r;

        rv = t->fl->C_GetSlotList(CK_TRUE, NULL, &n);
        if (rv != CKR_OK) {
                r = hsm_p11_fail(KILN_E_HSM_TOKEN, rv, "C_GetSlotList failed");
                goto out;
        }
        if (n > SLOTS_MAX) {
                r = kiln_fail(KILN_E_LIMIT, "module reports %lu slots, more than %u",
                              (unsigned long)n, SLOTS_MAX);
                goto out;
        }
        slots = kiln_calloc(n ? n : 1, sizeof(*slots));
        if (slots == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        rv = t->fl->C_GetSlotList(CK_TRUE, slots, &n);
        if (rv != CKR_OK) {
                r = hsm_p11_fail(KILN_E_HSM_TOKEN, rv, "C_GetSlotList failed");
                goto out;
        }
        for (CK_ULONG i = 0; i < n && i < SLOTS_MAX; i++) {
                size_t len = strlen(seen);

                rv = t->fl->C_GetTokenInfo(slots[i], &ti);
                if (rv == CKR_TOKEN_NOT_PRESENT || rv == CKR_TOKEN_NOT_RECOGNIZED)
                        continue;
                r = slot_describe(t, slots[i], &ti);
                if (r < 0)
                        goto out;
                if (!(ti.flags & CKF_TOKEN_INITIALIZED))
                        continue;
                if (len + 40 < sizeof(seen))
                        snprintf(seen + len, sizeof(seen) - len, "%s'%s'", len ? ", " : "",
                                 t->label);
                if (hsm_token_matches_uri(t, u)) {
                        matches++;
                        chosen = slots[i];
                }
        }
        if (matches == 0) {
                r = kiln_fail(KILN_E_HSM_TOKEN, "no token matches '%s' (tokens present: %s)", uri,
                              seen[0] ? seen : "none");
                goto out;
        }
        if (matches > 1) {
                r = kiln_fail(KILN_E_HSM_TOKEN,
                              "%zu tokens match '%s': name one with token=, serial= or slot-id=",
                              matches, uri);
                goto out;
        }
        rv = t->fl->C_GetTokenInfo(chosen, &ti);
        if (rv != CKR_OK) {
                r = hsm_p11_fail(KILN_E_HSM_TOKEN, rv, "C_GetTokenInfo of slot %lu failed",
                                 (unsigned long)chosen);
                goto out;
        }
        r = slot_describe(t, chosen, &ti);
out:
        kiln_free(slots);
        return r;
}

static int token_mechanisms_load(struct hsm_token *t)
{
        CK_ULONG n = 0;
        CK_RV rv;

        rv = t->fl->C_GetMechanismList(t->slot, NULL, &n);
        if (rv != CKR_OK)
                return hsm_p11_fail(KILN_E_HSM_PKCS11, rv,
                                    "C_GetMechanismList of token '%s' failed", t->label);
        if (n > MECHANISMS_MAX)
                return kiln_fail(KILN_E_LIMIT, "token '%s' lists %lu mechanisms, more than %u",
                                 t->label, (unsigned long)n, MECHANISMS_MAX);
        t->mechs = kiln_calloc(n ? n : 1, sizeof(*t->mechs));
        if (t->mechs == NULL)
                return KILN_E_NOMEM;
        rv = t->fl->C_GetMechanismList(t->slot, t->mechs, &n);
        if (rv != CKR_OK)
                return hsm_p11_fail(KILN_E_HSM_PKCS11, rv,
                                    "C_GetMechanismList of token '%s' failed", t->label);
        t->n_mechs = n;
        return KILN_OK;
}

int hsm_token_require_mechanism(const struct hsm_token *t, unsigned long mech)
{
        for (size_t i = 0; i < t->n_mechs; i++)
                if (t->mechs[i] == mech)
                        return KILN_OK;
        return kiln_fail(KILN_E_HSM_MECHANISM, "token '%s' lacks mechanism %s", t->label,
                         hsm_mech_name(mech));
}

int hsm_token_require_mechanism_name(const struct hsm_token *t, const char *name)
{
        unsigned long m;

        if (hsm_mech_from_name(name, &m) < 0)
                return kiln_fail(KILN_E_HSM_MECHANISM, "unknown PKCS#11 mechanism name '%s'",
                                 name);
        return hsm_token_require_mechanism(t, m);
}

static int pool_open(struct hsm_token *t, unsigned size)
{
        pthread_condattr_t ca;
        CK_FLAGS flags = CKF_SERIAL_SESSION | (t->read_write ? CKF_RW_SESSION : 0);

        if (pthread_condattr_init(&ca) != 0)
                return kiln_fail(KILN_E_INTERNAL, "pthread_condattr_init failed");
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        if (pthread_cond_init(&t->cond, &ca) != 0) {
                pthread_condattr_destroy(&ca);
                return kiln_fail(KILN_E_INTERNAL, "pthread_cond_init failed");
        }
        pthread_condattr_destroy(&ca);
        if (pthread_mutex_init(&t->lock, NULL) != 0) {
                pthread_cond_destroy(&t->cond);
                return kiln_fail(KILN_E_INTERNAL, "pthread_mutex_init failed");
        }
        t->sync_ready = 1;
        t->sessions = kiln_calloc(size, sizeof(*t->sessions));
        t->idle = kiln_calloc(size, sizeof(*t->idle));
        if (t->sessions == NULL || t->idle == NULL)
                return KILN_E_NOMEM;
        for (unsigned i = 0; i < size; i++) {
                CK_SESSION_HANDLE h;
                CK_RV rv = t->fl->C_OpenSession(t->slot, flags, NULL, NULL, &h);

                if (rv != CKR_OK)
                        return hsm_p11_fail(KILN_E_HSM_PKCS11, rv,
                                            "C_OpenSession %u of %u on token '%s' failed", i + 1,
                                            size, t->label);
                t->sessions[t->n_sessions++] = h;
                t->idle[t->n_idle++] = h;
        }
        return KILN_OK;
}

int hsm_session_get(struct hsm_token *t, CK_SESSION_HANDLE *ret)
{
        struct timespec deadline;
        int r = KILN_OK;

        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += t->borrow_timeout_ms / 1000;
        deadline.tv_nsec += (long)(t->borrow_timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
                deadline.tv_sec++;
                deadline.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&t->lock);
        while (t->n_idle == 0) {
                int e = pthread_cond_timedwait(&t->cond, &t->lock, &deadline);

                if (e == ETIMEDOUT && t->n_idle == 0) {
                        r = kiln_fail(KILN_E_TIMEOUT,
                                      "no free session on token '%s' within %u ms (pool of %zu)",
                                      t->label, t->borrow_timeout_ms, t->n_sessions);
                        goto out;
                }
        }
        *ret = t->idle[--t->n_idle];
out:
        pthread_mutex_unlock(&t->lock);
        return r;
}

void hsm_session_put(struct hsm_token *t, CK_SESSION_HANDLE s)
{
        pthread_mutex_lock(&t->lock);
        if (t->n_idle < t->n_sessions)
                t->idle[t->n_idle++] = s;
        pthread_cond_signal(&t->cond);
        pthread_mutex_unlock(&t->lock);
}

int hsm_token_login(struct hsm_token *t, enum hsm_pin_source src, const char *ref)
{
        struct kiln_secret *pin = NULL;
        CK_TOKEN_INFO ti;
        CK_RV rv;
        int r;

        if (t->n_sessions == 0)
                return kiln_fail(KILN_E_INTERNAL, "token '%s' has no session", t->label);
        /* fresh flags: a failed login elsewhere since open may have set "count low" */
        rv = t->fl->C_GetTokenInfo(t->slot, &ti);
        if (rv != CKR_OK) {
                r = hsm_p11_fail(KILN_E_HSM_TOKEN, rv, "C_GetTokenInfo of token '%s' failed",
                                 t->label);
                goto out;
        }
        r = hsm_pin_flags_check(&ti);
        if (r < 0)
                goto out;
        r = hsm_pin_load(src, ref, &pin);
        if (r < 0)
                goto out;
        rv = t->fl->C_Login(t->sessions[0], CKU_USER, pin->p, pin->len);
        /* the PIN is needed for nothing else: wipe it now, whatever the outcome */
        kiln_secret_free(pin);
        pin = NULL;
        switch (rv) {
        case CKR_OK:
        case CKR_USER_ALREADY_LOGGED_IN:
                t->logged_in = 1;
                r = KILN_OK;
                break;
        case CKR_PIN_INCORRECT:
        case CKR_PIN_LEN_RANGE:
                /* never retried: each attempt brings the token closer to locking */
                r = hsm_p11_fail(KILN_E_HSM_PIN, rv, "PIN incorrect for token '%s'", t->label);
                break;
        case CKR_PIN_LOCKED:
                r = hsm_p11_fail(KILN_E_HSM_PIN_LOCKED, rv, "user PIN of token '%s' is locked",
                                 t->label);
                break;
        default:
                r = hsm_p11_fail(KILN_E_HSM_PKCS11, rv, "C_Login to token '%s' failed",
                                 t->label);
                break;
        }
out:
        kiln_secret_free(pin);
        return r;
}

int hsm_token_open(const struct hsm_config *cfg, struct hsm_token **ret)
{
        struct hsm_token *t = NULL;
        struct hsm_uri u;
        unsigned pool;
        int r;

        if (cfg->token_uri == NULL) {
                r = kiln_fail(KILN_E_HSM_TOKEN, "no token URI configured");
                goto out;
        }
        r = hsm_uri_parse(cfg->token_uri, &u);
        if (r < 0)
                goto out;
        pool = cfg->pool_size ? cfg->pool_size : HSM_POOL_DEFAULT;
        if (pool > HSM_POOL_MAX) {
                r = kiln_fail(KILN_E_RANGE, "session pool of %u is more than %u", pool,
                              HSM_POOL_MAX);
                goto out;
        }
        if (cfg->pin_source < HSM_PIN_NONE || cfg->pin_source >= HSM_PIN_SOURCE_MAX) {
                r = kiln_fail(KILN_E_INVAL, "unknown PIN source %d", (int)cfg->pin_source);
                goto out;
        }
        t = kiln_calloc(1, sizeof(*t));
        if (t == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        t->production = cfg->production != 0;
        t->read_write = cfg->read_write != 0;
        t->borrow_timeout_ms = cfg->borrow_timeout_ms ? cfg->borrow_timeout_ms
                                                      : HSM_BORROW_TIMEOUT_MS;
        if (cfg->softhsm_conf != NULL) {
                r = hsm_module_use_conf(cfg->module ? cfg->module : HSM_SOFTHSM_MODULE,
                                        cfg->softhsm_conf);
                if (r < 0)
                        goto out;
        }
        r = hsm_module_get(cfg->module ? cfg->module : HSM_SOFTHSM_MODULE, &t->mod);
        if (r < 0)
                goto out;
        t->fl = t->mod->fl;
        r = token_select(t, &u, cfg->token_uri);
        if (r < 0)
                goto out;
        r = token_mechanisms_load(t);
        if (r < 0)
                goto out;
        for (size_t i = 0; i < cfg->n_mechanisms; i++) {
                r = hsm_token_require_mechanism_name(t, cfg->mechanisms[i]);
                if (r < 0)
                        goto out;
        }
        r = pool_open(t, pool);
        if (r < 0)
                goto out;
        if (cfg->pin_source != HSM_PIN_NONE) {
                r = hsm_token_login(t, cfg->pin_source, cfg->pin_ref);
                if (r < 0)
                        goto out;
        }
        kiln_debug("hsm: opened token '%s' (slot %lu, %u sessions)", t->label,
                   (unsigned long)t->slot, pool);
        *ret = t;
        t = NULL;
        r = KILN_OK;
out:
        hsm_token_free(t);
        return r;
}

void hsm_token_free(struct hsm_token *t)
{
        if (t == NULL)
                return;
        for (size_t i = 0; i < t->n_sessions; i++)
                (void)t->fl->C_CloseSession(t->sessions[i]);
        kiln_free(t->sessions);
        kiln_free(t->idle);
        kiln_free(t->mechs);
        if (t->sync_ready) {
                pthread_mutex_destroy(&t->lock);
                pthread_cond_destroy(&t->cond);
        }
        hsm_module_put(t->mod);
        kiln_free(t);
}

const char *hsm_token_label(const struct hsm_token *t)
{
        return t->label;
}

int hsm_token_is_production(const struct hsm_token *t)
{
        return t->production;
}

void hsm_token_mechanisms(const struct hsm_token *t, const unsigned long **ret_list,
                          size_t *ret_n)
{
        *ret_list = t->mechs;
        *ret_n = t->n_mechs;
}

int hsm_token_random(struct hsm_token *t, void *buf, size_t n)
{
        CK_SESSION_HANDLE s;
        CK_RV rv;
        int r;

        if (n > HSM_RANDOM_MAX)
                return kiln_fail(KILN_E_RANGE, "%zu random bytes asked, at most %u per call", n,
                                 HSM_RANDOM_MAX);
        if (n == 0)
                return KILN_OK;
        r = hsm_session_get(t, &s);
        if (r < 0)
                return r;
        rv = t->fl->C_GenerateRandom(s, buf, n);
        hsm_session_put(t, s);
        if (rv != CKR_OK)
                return hsm_p11_fail(KILN_E_HSM_RANDOM, rv,
                                    "C_GenerateRandom of %zu bytes on token '%s' failed", n,
                                    t->label);
        return KILN_OK;
}

int hsm_token_describe(struct hsm_token *t, struct hsm_token_desc *ret)
{
        struct hsm_token_desc d;
        CK_TOKEN_INFO ti;
        CK_RV rv;

        rv = t->fl->C_GetTokenInfo(t->slot, &ti);
        if (rv != CKR_OK)
                return hsm_p11_fail(KILN_E_HSM_TOKEN, rv, "C_GetTokenInfo of token '%s' failed",
                                    t->label);
        memset(&d, 0, sizeof(d));
        hsm_p11_text(ti.label, sizeof(ti.label), d.label, sizeof(d.label));
        hsm_p11_text(ti.manufacturerID, sizeof(ti.manufacturerID), d.manufacturer,
                     sizeof(d.manufacturer));
        hsm_p11_text(ti.model, sizeof(ti.model), d.model, sizeof(d.model));
        hsm_p11_text(ti.serialNumber, sizeof(ti.serialNumber), d.serial, sizeof(d.serial));
        d.slot_id = t->slot;
        d.flags = ti.flags;
        d.user_pin_count_low = !!(ti.flags & CKF_USER_PIN_COUNT_LOW);
        d.user_pin_final_try = !!(ti.flags & CKF_USER_PIN_FINAL_TRY);
        d.user_pin_locked = !!(ti.flags & CKF_USER_PIN_LOCKED);
        d.user_pin_to_be_changed = !!(ti.flags & CKF_USER_PIN_TO_BE_CHANGED);
        d.so_pin_count_low = !!(ti.flags & CKF_SO_PIN_COUNT_LOW);
        d.so_pin_final_try = !!(ti.flags & CKF_SO_PIN_FINAL_TRY);
        d.so_pin_locked = !!(ti.flags & CKF_SO_PIN_LOCKED);
        d.so_pin_to_be_changed = !!(ti.flags & CKF_SO_PIN_TO_BE_CHANGED);
        d.min_pin_len = ti.ulMinPinLen;
        d.max_pin_len = ti.ulMaxPinLen;
        d.session_count = ti.ulSessionCount;
        d.max_session_count = ti.ulMaxSessionCount;
        d.pool_size = (unsigned)t->n_sessions;
        d.logged_in = t->logged_in;
        *ret = d;
        return KILN_OK;
}
