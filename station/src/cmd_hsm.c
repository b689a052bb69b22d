/*
 * kiln hsm: the development PKI (init-dev) and what a token offers (info).
 *
 *     kiln hsm init-dev --dir DIR [--module PATH]
 *     kiln hsm info --dir DIR [--key URI]...
 *     kiln hsm info --module PATH --token URI [--pin-file FILE | --pin-env VAR] [--key URI]...
 *
 * A PIN is never accepted on the command line; it comes from a file only its owner can read or
 * from an environment variable.
 */
#include <stdio.h>
#include <string.h>

#include "kiln/cli.h"
#include "kiln/error.h"
#include "kiln/hsm.h"
#include "kiln/hsm_dev.h"
#include "kiln/limits.h"
#include "kiln/util.h"

#define INFO_KEYS_MAX 16
#define INFO_OBJECTS_MAX 16

static void usage(FILE *f)
{
        fprintf(f,
                "usage: kiln hsm init-dev --dir DIR [--module PATH]\n"
                "       kiln hsm info --dir DIR [--key URI]...\n"
                "       kiln hsm info --module PATH --token URI [--pin-file FILE | --pin-env VAR]\n"
                "                     [--key URI]...\n"
                "\n"
                "init-dev  create a throwaway development PKI in a SoftHSM token under DIR:\n"
                "          token '%s' with a root CA (P-384), an issuing CA (P-256), a station\n"
                "          audit key (P-256) and a credential-commitment HMAC key, all generated\n"
                "          in the token and not extractable; DIR/softhsm2.conf, DIR/pin,\n"
                "          DIR/so-pin, DIR/root-ca.pem, DIR/issuing-ca.pem, DIR/audit-pub.pem.\n"
                "          Does nothing when DIR already holds a complete one.\n"
                "info      show a token (label, manufacturer, model, serial, flags and PIN\n"
                "          counters), its mechanisms, and the objects each --key URI matches\n"
                "          (class, type and curve, label, id, EXTRACTABLE and SENSITIVE).\n"
                "          With --dir: the token of DIR, its PIN file and (without --key) its keys.\n"
                "\n"
                "options:\n"
                "  --dir DIR         development PKI directory\n"
                "  --module PATH     PKCS#11 module (default %s)\n"
                "  --token URI       token, as a PKCS#11 URI (RFC 7512), e.g. pkcs11:token=NAME\n"
                "  --pin-file FILE   read the user PIN from FILE (owner-only, mode 0600 or 0400)\n"
                "  --pin-env VAR     read the user PIN from environment variable VAR\n"
                "  --key URI         a key or object to describe (repeatable, at most %d)\n"
                "\n"
                "A PIN is never given on the command line or in a URI.\n",
                HSM_DEV_TOKEN, HSM_SOFTHSM_MODULE, INFO_KEYS_MAX);
}

struct opts {
        const char *dir;
        const char *module;
        const char *token;
        const char *pin_file;
        const char *pin_env;
        const char *keys[INFO_KEYS_MAX];
        size_t n_keys;
};

/* "--name VALUE" or "--name=VALUE" at argv[*i]; advances *i past what it used. */
static int opt_value(int argc, char **argv, int *i, const char *name, const char **ret)
{
        const char *a = argv[*i];
        size_t n = strlen(name);

        if (strncmp(a, name, n) != 0)
                return 0;
        if (a[n] == '=') {
                *ret = a + n + 1;
                return 1;
        }
        if (a[n] != '\0')
                return 0;
        if (*i + 1 >= argc) {
                fprintf(stderr, "kiln hsm: %s needs a value\n", name);
                return -1;
        }
        *ret = argv[++*i];
        return 1;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
        memset(o, 0, sizeof(*o));
        for (int i = 2; i < argc; i++) {
                const char *v = NULL;
                int m;

                if (strncmp(argv[i], "--pin", 5) == 0 && strncmp(argv[i], "--pin-file", 10) != 0 &&
                    strncmp(argv[i], "--pin-env", 9) != 0) {
                        fprintf(stderr, "kiln hsm: a PIN is never given on the command line: use "
                                        "--pin-file FILE or --pin-env VAR\n");
                        return -1;
                }
                if ((m = opt_value(argc, argv, &i, "--dir", &v)) != 0) {
                        o->dir = v;
                } else if ((m = opt_value(argc, argv, &i, "--module", &v)) != 0) {
                        o->module = v;
                } else if ((m = opt_value(argc, argv, &i, "--token", &v)) != 0) {
                        o->token = v;
                } else if ((m = opt_value(argc, argv, &i, "--pin-file", &v)) != 0) {
                        o->pin_file = v;
                } else if ((m = opt_value(argc, argv, &i, "--pin-env", &v)) != 0) {
                        o->pin_env = v;
                } else if ((m = opt_value(argc, argv, &i, "--key", &v)) != 0) {
                        if (m > 0 && o->n_keys == INFO_KEYS_MAX) {
                                fprintf(stderr, "kiln hsm: at most %d --key options\n",
                                        INFO_KEYS_MAX);
                                return -1;
                        }
                        if (m > 0)
                                o->keys[o->n_keys++] = v;
                } else {
                        fprintf(stderr, "kiln hsm: unknown option '%s'\n", argv[i]);
                        return -1;
                }
                if (m < 0)
                        return -1;
        }
        return 0;
}

static int fail(const char *what, int r)
{
        const char *d = kiln_err_detail();

        fprintf(stderr, "kiln hsm %s: %s (%s)\n", what, d[0] ? d : kiln_strerror(r),
                kiln_errname(r));
        return 1;
}

static void print_dev_keys(void)
{
        printf("keys:\n"
               "  root CA key (EC P-384)      %s\n"
               "  issuing CA key (EC P-256)   %s\n"
               "  audit key (EC P-256)        %s\n"
               "  commitment key (HMAC)       %s\n"
               "  recipe release key (EC P-256, an engineer's in production)   %s\n"
               "  quota officer key (EC P-256, the PKI officer's in production) %s\n",
               HSM_DEV_ROOT_URI, HSM_DEV_ISSUING_URI, HSM_DEV_AUDIT_URI, HSM_DEV_COMMIT_URI,
               HSM_DEV_RELEASE_URI, HSM_DEV_OFFICER_URI);
}

static int cmd_init_dev(const struct opts *o)
{
        enum hsm_dev_state state = HSM_DEV_CREATED;
        struct hsm_dev d;
        int r;

        if (o->dir == NULL || o->token || o->pin_file || o->pin_env || o->n_keys) {
                fprintf(stderr, "kiln hsm init-dev: needs --dir DIR (and optionally --module)\n");
                return 2;
        }
        kiln_err_reset();
        r = hsm_dev_init(o->dir, o->module, &state);
        if (r < 0)
                return fail("init-dev", r);
        r = hsm_dev_use(o->dir, o->module, &d);
        if (r < 0)
                return fail("init-dev", r);
        if (state == HSM_DEV_EXISTED)
                printf("%s already holds a complete development PKI (token '%s'): nothing "
                       "changed\n",
                       d.dir, HSM_DEV_TOKEN);
        else
                printf("created a development PKI in %s (token '%s'; development only)\n", d.dir,
                       HSM_DEV_TOKEN);
        printf("  export SOFTHSM2_CONF=%s\n"
               "  user PIN file:  %s/%s (SO PIN: %s/%s)\n"
               "  root CA:        %s/%s\n"
               "  issuing CA:     %s/%s\n"
               "  audit key:      %s/%s\n",
               d.conf, d.dir, HSM_DEV_PIN, d.dir, HSM_DEV_SO_PIN, d.dir, HSM_DEV_ROOT_PEM, d.dir,
               HSM_DEV_ISSUING_PEM, d.dir, HSM_DEV_AUDIT_PEM);
        print_dev_keys();
        return 0;
}

static const char *yes_no(int v)
{
        return v < 0 ? "n/a" : v ? "yes" : "no";
}

/* A PKCS#11 count: "n/a" when the token does not report it, "no limit" for a maximum of 0. */
static const char *count_str(unsigned long v, int is_max, char *buf, size_t cap)
{
        if (v == HSM_INFO_UNAVAILABLE)
                return "n/a";
        if (is_max && v == 0)
                return "no limit";
        snprintf(buf, cap, "%lu", v);
        return buf;
}

static void print_token(const struct hsm_token_desc *d)
{
        char flags[512], open[24], max[24];

        if (hsm_token_flags_str(d->flags, flags, sizeof(flags)) < 0)
                kiln_strlcpy(flags, "(too many to show)", sizeof(flags));
        printf("token '%s'\n"
               "  manufacturer:  %s\n"
               "  model:         %s\n"
               "  serial:        %s\n"
               "  slot id:       %lu\n"
               "  flags:         %s\n"
               "  user PIN:      count low %s, final try %s, locked %s, to be changed %s\n"
               "  SO PIN:        count low %s, final try %s, locked %s, to be changed %s\n"
               "  PIN length:    %lu..%lu\n"
               "  sessions:      %s open (max %s), pool of %u, %s\n",
               d->label, d->manufacturer, d->model, d->serial, d->slot_id, flags,
               yes_no(d->user_pin_count_low), yes_no(d->user_pin_final_try),
               yes_no(d->user_pin_locked), yes_no(d->user_pin_to_be_changed),
               yes_no(d->so_pin_count_low), yes_no(d->so_pin_final_try), yes_no(d->so_pin_locked),
               yes_no(d->so_pin_to_be_changed), d->min_pin_len, d->max_pin_len,
               count_str(d->session_count, 0, open, sizeof(open)),
               count_str(d->max_session_count, 1, max, sizeof(max)), d->pool_size,
               d->logged_in ? "logged in" : "not logged in");
}

static void print_mechanisms(const struct hsm_token *t)
{
        const unsigned long *m = NULL;
        size_t n = 0;

        hsm_token_mechanisms(t, &m, &n);
        printf("mechanisms (%zu):\n", n);
        for (size_t i = 0; i < n; i++)
                printf("  %s\n", hsm_mech_name(m[i]));
}

static void print_object(const struct hsm_object_desc *d)
{
        char id[2 * HSM_ID_MAX + 1] = "";

        kiln_hex_encode(d->id, d->id_len, id, sizeof(id));
        printf("    %s", hsm_class_name(d->cls));
        if (d->is_key) {
                printf(" %s", hsm_key_type_name(d->key_type));
                if (d->curve[0])
                        printf(" %s", d->curve);
                if (d->bits)
                        printf(" %lu bits", d->bits);
        }
        printf("\n      label '%s', id %s\n", d->label, id[0] ? id : "(none)");
        if (d->is_secret)
                printf("      CKA_EXTRACTABLE %s, CKA_SENSITIVE %s, CKA_SIGN %s\n",
                       yes_no(d->extractable), yes_no(d->sensitive), yes_no(d->sign));
}

static int print_keys(struct hsm_token *t, const char *const *keys, size_t n_keys)
{
        struct hsm_object_desc objs[INFO_OBJECTS_MAX];
        int rc = 0;

        printf("keys:\n");
        for (size_t i = 0; i < n_keys; i++) {
                size_t n = 0;
                int r;

                kiln_err_reset();
                printf("  %s\n", keys[i]);
                r = hsm_token_find_objects(t, keys[i], objs, INFO_OBJECTS_MAX, &n);
                if (r < 0) {
                        printf("    error: %s\n",
                               kiln_err_detail()[0] ? kiln_err_detail() : kiln_strerror(r));
                        rc = 1;
                        continue;
                }
                if (n == 0) {
                        printf("    no object matches\n");
                        rc = 1;
                }
                for (size_t j = 0; j < n; j++)
                        print_object(&objs[j]);
        }
        return rc;
}

static int cmd_info(const struct opts *o)
{
        static const char *const dev_keys[] = {HSM_DEV_ROOT_URI, HSM_DEV_ISSUING_URI,
                                               HSM_DEV_AUDIT_URI, HSM_DEV_COMMIT_URI};
        const char *const *keys = o->keys;
        size_t n_keys = o->n_keys;
        struct hsm_token *t = NULL;
        struct hsm_token_desc desc;
        struct hsm_config cfg;
        enum hsm_pin_source src = HSM_PIN_NONE;
        const char *ref = NULL;
        struct hsm_dev d;
        int r, rc = 1;

        kiln_err_reset();
        if (o->pin_file && o->pin_env) {
                fprintf(stderr, "kiln hsm info: give --pin-file or --pin-env, not both\n");
                return 2;
        }
        if (o->dir != NULL) {
                if (o->token || o->pin_file || o->pin_env) {
                        fprintf(stderr, "kiln hsm info: --dir names the token and its PIN file; "
                                        "do not combine it with --token or --pin-*\n");
                        return 2;
                }
                r = hsm_dev_use(o->dir, o->module, &d);
                if (r < 0)
                        return fail("info", r);
                cfg = d.cfg;
                src = HSM_PIN_FILE;
                ref = d.pin_file;
                if (n_keys == 0) {
                        keys = dev_keys;
                        n_keys = sizeof(dev_keys) / sizeof(dev_keys[0]);
                }
        } else {
                if (o->module == NULL || o->token == NULL) {
                        fprintf(stderr, "kiln hsm info: needs --dir DIR, or --module PATH and "
                                        "--token URI\n");
                        return 2;
                }
                memset(&cfg, 0, sizeof(cfg));
                cfg.module = o->module;
                cfg.token_uri = o->token;
                src = o->pin_file ? HSM_PIN_FILE : o->pin_env ? HSM_PIN_ENV : HSM_PIN_NONE;
                ref = o->pin_file ? o->pin_file : o->pin_env;
        }
        /* open without the PIN first: token facts and mechanisms need no login */
        cfg.pin_source = HSM_PIN_NONE;
        cfg.pool_size = 1;
        r = hsm_token_open(&cfg, &t);
        if (r < 0) {
                rc = fail("info", r);
                goto out;
        }
        if (src != HSM_PIN_NONE) {
                r = hsm_token_login(t, src, ref);
                if (r < 0) {
                        /* still show the token: its flags tell why the login was refused */
                        fail("info", r);
                        kiln_err_reset();
                }
        }
        r = hsm_token_describe(t, &desc);
        if (r < 0) {
                rc = fail("info", r);
                goto out;
        }
        print_token(&desc);
        print_mechanisms(t);
        rc = 0;
        if (n_keys > 0)
                rc = print_keys(t, keys, n_keys);
        if (src != HSM_PIN_NONE && !desc.logged_in)
                rc = 1;
out:
        hsm_token_free(t);
        return rc;
}

int station_cmd_hsm(int argc, char **argv)
{
        struct opts o;

        if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
            strcmp(argv[1], "help") == 0) {
                usage(argc < 2 ? stderr : stdout);
                return argc < 2 ? 2 : 0;
        }
        for (int i = 2; i < argc; i++) {
                if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
                        usage(stdout);
                        return 0;
                }
        }
        if (strcmp(argv[1], "init-dev") != 0 && strcmp(argv[1], "info") != 0) {
                fprintf(stderr, "kiln hsm: unknown subcommand '%s'\n", argv[1]);
                usage(stderr);
                return 2;
        }
        if (parse_opts(argc, argv, &o) < 0)
                return 2;
        if (strcmp(argv[1], "init-dev") == 0)
                return cmd_init_dev(&o);
        return cmd_info(&o);
}
