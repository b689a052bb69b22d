/*
 * The JSON string escaper (json_escape_into), which every export record, audit digest and event
 * line goes through. It copies runs of plain bytes eight at a time; these tests build strings from
 * tokens whose escaped form is known, at every alignment and around every run length, and compare
 * the whole output with the tokens' escapes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kiln/buf.h"
#include "kiln/error.h"
#include "kiln/json.h"

struct token {
        const char *in;
        const char *out;
};

/* Plain bytes go out as they are; the rest as JSON escapes; valid UTF-8 as it is; a byte that
 * starts no valid UTF-8 sequence as U+FFFD. No token followed by another forms a valid sequence the
 * two would not form alone (no truncated sequence is a token). */
static const struct token tokens[] = {
        {"a", "a"},           {"Z", "Z"},          {"0", "0"},
        {" ", " "},           {"/", "/"},          {"~", "~"},
        {"\x7f", "\x7f"},     {"\"", "\\\""},      {"\\", "\\\\"},
        {"\n", "\\n"},        {"\r", "\\r"},       {"\t", "\\t"},
        {"\x01", "\\u0001"},  {"\x1f", "\\u001f"}, {"\x08", "\\u0008"},
        {"\xc3\xa9", "\xc3\xa9"},                  /* é */
        {"\xe2\x82\xac", "\xe2\x82\xac"},          /* € */
        {"\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80"},  /* U+1F600 */
        {"\x80", "\\ufffd"},  {"\xff", "\\ufffd"}, {"\xc0", "\\ufffd"},
        {"\xed\xa0\x80", "\\ufffd\\ufffd\\ufffd"}, /* a surrogate: three bad bytes */
};
#define N_TOKENS (sizeof(tokens) / sizeof(tokens[0]))
#define PLAIN_TOKENS 7 /* the first ones */

static void check(const char *in, size_t n, const char *want, size_t want_len)
{
        struct kiln_buf b;

        kiln_buf_init(&b, 1u << 20);
        assert_int_equal(json_escape_into(&b, in, n), KILN_OK);
        if (b.len != want_len || (want_len > 0 && memcmp(b.data, want, want_len) != 0))
                fail_msg("escape of %zu bytes: got %zu bytes, want %zu", n, b.len, want_len);
        kiln_buf_free(&b);
}

/* Runs of 0..40 plain bytes before and after each token, at each of 8 offsets into the buffer. */
static void test_runs_around_every_token(void **state)
{
        char in[256], want[512];

        (void)state;
        for (size_t t = 0; t < N_TOKENS; t++)
                for (size_t pre = 0; pre <= 40; pre++)
                        for (size_t post = 0; post <= 40; post += 3)
                                for (size_t off = 0; off < 8; off++) {
                                        size_t n = off, w = 0, tl = strlen(tokens[t].in);
                                        size_t ol = strlen(tokens[t].out);

                                        memset(in, 'x', off);
                                        for (size_t i = 0; i < pre; i++)
                                                in[n++] = want[w++] = (char)('a' + i % 26);
                                        memcpy(in + n, tokens[t].in, tl);
                                        n += tl;
                                        memcpy(want + w, tokens[t].out, ol);
                                        w += ol;
                                        for (size_t i = 0; i < post; i++)
                                                in[n++] = want[w++] = (char)('A' + i % 26);
                                        check(in + off, n - off, want, w);
                                }
}

/* Random strings of tokens, plain ones more likely (long runs), at random offsets. */
static void test_random_token_strings(void **state)
{
        char in[2048], want[8192];
        uint32_t seed = 12345;

        (void)state;
        for (unsigned iter = 0; iter < 20000; iter++) {
                size_t off, n, w = 0, count;

                seed = seed * 1103515245u + 12345u;
                off = (seed >> 16) % 8;
                count = (seed >> 8) % 120;
                n = off;
                memset(in, '.', off);
                for (size_t k = 0; k < count; k++) {
                        const struct token *t;

                        seed = seed * 1103515245u + 12345u;
                        t = (seed >> 16) % 4 != 0 ? &tokens[(seed >> 20) % PLAIN_TOKENS]
                                                  : &tokens[(seed >> 20) % N_TOKENS];
                        memcpy(in + n, t->in, strlen(t->in));
                        n += strlen(t->in);
                        memcpy(want + w, t->out, strlen(t->out));
                        w += strlen(t->out);
                }
                check(in + off, n - off, want, w);
        }
}

/* json_strn quotes what it escapes; an empty string is "". */
static void test_strn_quotes(void **state)
{
        struct kiln_buf b;
        struct json_w w;

        (void)state;
        kiln_buf_init(&b, 4096);
        json_init(&w, &b);
        json_arr_begin(&w);
        json_strn(&w, "", 0);
        json_strn(&w, "0123456789abcdef\"", 17);
        json_arr_end(&w);
        assert_int_equal(json_error(&w), KILN_OK);
        assert_int_equal(b.len, strlen("[\"\",\"0123456789abcdef\\\"\"]"));
        assert_memory_equal(b.data, "[\"\",\"0123456789abcdef\\\"\"]", b.len);
        kiln_buf_free(&b);
}

/* Over the buffer's limit the error is kept, whichever path (in place or growing) hit it. */
static void test_limit(void **state)
{
        char in[100];
        struct kiln_buf b;

        (void)state;
        memset(in, 'p', sizeof(in));
        kiln_buf_init(&b, 64);
        assert_int_not_equal(json_escape_into(&b, in, sizeof(in)), KILN_OK);
        assert_true(kiln_buf_error(&b) != 0);
        kiln_buf_free(&b);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_runs_around_every_token),
                cmocka_unit_test(test_random_token_strings),
                cmocka_unit_test(test_strn_quotes),
                cmocka_unit_test(test_limit),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
