/* test_json.c - the defensive JSON reader: valid documents, lookups,
 * typed getters, and a table of malformed inputs each with its own error. */
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "testutil.h"

static kg_json *parse_ok(const char *text)
{
    kg_json *j = NULL;
    kg_error err = {0};
    kg_status s = kg_json_parse(&j, text, strlen(text), "test", &err);
    kgt_check(s == KG_OK && j, "parse %.60s -> %s %s", text, kg_status_name(s), err.msg);
    return j;
}

static void test_valid(void)
{
    kg_json *j = parse_ok(" {\"a\": [1, -2.5, 1e3, 0, -0, 1.5E-3, 12345678901],"
                          " \"b\": {\"c\": true, \"d\": false, \"e\": null},"
                          " \"s\": \"x\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\\u0000z\","
                          " \"a2\": \"second\", \"empty\": [], \"eo\": {}}\n\t");
    const kg_json *a = kg_json_get(j, "a");
    const kg_json *s = kg_json_get(j, "s");
    const char want[] = "x\"\\/\b\f\n\r\t\xc3\xa9\xf0\x9f\x98\x80\0z";

    kgt_check(kg_json_type_of(j) == KG_JSON_OBJECT && kg_json_count(j) == 6,
              "root object with 6 members (%zu)", kg_json_count(j));
    kgt_check(kg_json_type_of(a) == KG_JSON_ARRAY && kg_json_count(a) == 7, "array member");
    kgt_check(kg_json_number(kg_json_at(a, 0), 0) == 1.0 &&
                  kg_json_number(kg_json_at(a, 1), 0) == -2.5 &&
                  kg_json_number(kg_json_at(a, 2), 0) == 1000.0 &&
                  kg_json_number(kg_json_at(a, 5), 0) == 1.5e-3 &&
                  kg_json_number(kg_json_at(a, 6), 0) == 12345678901.0,
              "numbers");
    kgt_check(kg_json_bool(kg_json_get(kg_json_get(j, "b"), "c"), 0) == 1 &&
                  kg_json_bool(kg_json_get(kg_json_get(j, "b"), "d"), 1) == 0 &&
                  kg_json_type_of(kg_json_get(kg_json_get(j, "b"), "e")) == KG_JSON_NULL &&
                  kg_json_get(kg_json_get(j, "b"), "e") != NULL,
              "true/false/null");
    kgt_check(kg_json_string_len(s) == sizeof want - 1 &&
                  memcmp(kg_json_string(s), want, sizeof want - 1) == 0,
              "escapes decode to UTF-8, surrogate pair, embedded NUL (len %zu, want %zu)",
              kg_json_string_len(s), sizeof want - 1);
    kgt_check(kg_json_count(kg_json_get(j, "empty")) == 0 &&
                  kg_json_type_of(kg_json_get(j, "empty")) == KG_JSON_ARRAY &&
                  kg_json_type_of(kg_json_get(j, "eo")) == KG_JSON_OBJECT,
              "empty containers");
    kgt_check(strcmp(kg_json_key_at(j, 3), "a2") == 0 && kg_json_key_at(a, 0) == NULL &&
                  kg_json_at(a, 7) == NULL && kg_json_key_at(j, 6) == NULL,
              "key_at / at bounds");
    kgt_check(kg_json_get(kg_json_get(kg_json_get(j, "zz"), "y"), "x") == NULL &&
                  kg_json_string(NULL) == NULL && kg_json_number(NULL, 7.0) == 7.0 &&
                  kg_json_count(NULL) == 0 && kg_json_type_of(NULL) == KG_JSON_NULL &&
                  kg_json_string(a) == NULL && kg_json_number(s, -1.0) == -1.0,
              "lookups tolerate NULL and wrong types");
    kg_json_free(j);

    j = parse_ok("\"plain\"");
    kgt_check(strcmp(kg_json_string(j), "plain") == 0, "a scalar string document");
    kg_json_free(j);

    /* the length bounds the parse: no NUL terminator is read */
    {
        kg_json *k = NULL;
        kg_error err = {0};
        kg_status st = kg_json_parse(&k, "123", 2, "test", &err);
        kgt_check(st == KG_OK && kg_json_number(k, 0) == 12.0, "len bounds the input (12 of 123)");
        kg_json_free(k);
    }
}

static void test_getters(void)
{
    kg_json *j = parse_ok("{\"n\": 7, \"f\": 2.5, \"big\": 1e300, \"neg\": -3, \"s\": \"x\","
                          " \"arr\": [1, 2, 3], \"bad\": [1, 2.5], \"huge\": 1e17}");
    kg_error err = {0};
    int64_t v = 0, arr[4];
    double d = 0;
    size_t n = 0;

    kgt_check(kg_json_req_int(j, "n", &v, "cfg", &err) == KG_OK && v == 7, "req_int 7");
    kgt_check(kg_json_req_int(j, "neg", &v, "cfg", &err) == KG_OK && v == -3, "req_int -3");
    kgt_check(kg_json_req_int(j, "f", &v, "cfg", &err) == KG_ERR_FORMAT &&
                  strstr(err.msg, "cfg: key 'f' is not an integer"),
              "req_int on 2.5: %s", err.msg);
    kgt_check(kg_json_req_int(j, "huge", &v, "cfg", &err) == KG_ERR_FORMAT,
              "req_int beyond 2^53 refused: %s", err.msg);
    kgt_check(kg_json_req_int(j, "missing", &v, "cfg", &err) == KG_ERR_FORMAT &&
                  strstr(err.msg, "cfg: missing key 'missing'"),
              "req_int missing: %s", err.msg);
    kgt_check(kg_json_req_double(j, "f", &d, "cfg", &err) == KG_OK && d == 2.5, "req_double");
    kgt_check(kg_json_req_double(j, "s", &d, "cfg", &err) == KG_ERR_FORMAT &&
                  strstr(err.msg, "'s' is not a finite number"),
              "req_double on a string: %s", err.msg);
    kgt_check(kg_json_req_int_array(j, "arr", arr, 4, &n, "cfg", &err) == KG_OK && n == 3 &&
                  arr[0] == 1 && arr[2] == 3,
              "req_int_array");
    kgt_check(kg_json_req_int_array(j, "arr", arr, 2, &n, "cfg", &err) == KG_ERR_FORMAT &&
                  strstr(err.msg, "has 3 elements, at most 2"),
              "req_int_array too long: %s", err.msg);
    kgt_check(kg_json_req_int_array(j, "bad", arr, 4, &n, "cfg", &err) == KG_ERR_FORMAT &&
                  strstr(err.msg, "element 1 of 'bad'"),
              "req_int_array non-integer: %s", err.msg);
    kgt_check(kg_json_req_int_array(j, "n", arr, 4, &n, "cfg", &err) == KG_ERR_FORMAT &&
                  strstr(err.msg, "not an array"),
              "req_int_array on a number: %s", err.msg);
    kgt_check(kg_json_req_int(NULL, "n", &v, "cfg", &err) == KG_ERR_FORMAT,
              "req_int on NULL object");
    kg_json_free(j);
}

static void test_invalid(void)
{
    static const struct {
        const char *text;
        const char *msg;
    } cases[] = {
        {"", "value expected, found end of input"},
        {"   ", "value expected, found end of input"},
        {"{", "object key (a string) expected"},
        {"[1,", "value expected"},
        {"[1", "unterminated array"},
        {"[1,]", "unexpected character ']'"},
        {"{\"a\":1,}", "object key (a string) expected"},
        {"{\"a\" 1}", "':' expected"},
        {"{1:2}", "object key (a string) expected"},
        {"[1 2]", "',' or ']' expected"},
        {"01", "trailing characters"},
        {"1.", "digit expected after '.'"},
        {".5", "unexpected character '.'"},
        {"+1", "unexpected character '+'"},
        {"-", "invalid number"},
        {"1e", "digit expected in exponent"},
        {"NaN", "unexpected character 'N'"},
        {"Infinity", "unexpected character 'I'"},
        {"tru", "unexpected character 't'"},
        {"nul", "unexpected character 'n'"},
        {"'a'", "unexpected character '''"},
        {"\"abc", "unterminated string"},
        {"\"a\\", "unterminated escape"},
        {"\"\\x\"", "invalid escape '\\x'"},
        {"\"\\u12\"", "invalid \\u escape"},
        {"\"\\u12G4\"", "invalid \\u escape"},
        {"\"\\ud800\"", "without a low surrogate"},
        {"\"\\ud800\\u0041\"", "without a low surrogate"},
        {"\"\\udc00\"", "lone low surrogate"},
        {"\"a\nb\"", "control character 0x0a"},
        {"\"a\tb\"", "control character 0x09"},
        {"\"\xff\"", "invalid UTF-8"},
        {"\"\xc0\xaf\"", "invalid UTF-8"},
        {"\"\xed\xa0\x80\"", "invalid UTF-8"},
        {"\"\xe2\x82\"", "invalid UTF-8"},
        {"{} x", "trailing characters"},
        {"[1] [2]", "trailing characters"},
        {"\x01", "unexpected byte 0x01"},
        {"{\"a\": 1, \"b\": 2, \"a\": 3}", "duplicate object key \"a\""},
        {"{\"x\": {\"k\": 1, \"k\": 1}}", "duplicate object key \"k\""},
        {"{\"a\\u0000b\": 1}", "object key with a NUL character"},
        {"{\"\\u0000\": 1}", "object key with a NUL character"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kg_json *j = NULL;
        kg_error err = {0};
        kg_status s = kg_json_parse(&j, cases[i].text, strlen(cases[i].text), "doc.json", &err);
        kgt_check(s == KG_ERR_FORMAT && j == NULL && strstr(err.msg, cases[i].msg) &&
                      strstr(err.msg, "doc.json"),
                  "invalid #%zu -> %s \"%s\" (want \"%s\")", i, kg_status_name(s), err.msg,
                  cases[i].msg);
    }
}

static void test_limits(void)
{
    char buf[400];
    kg_json *j = NULL;
    kg_error err = {0};
    kg_status s;

    /* 64 nested arrays are accepted, 65 refused */
    memset(buf, '[', 64);
    memset(buf + 64, ']', 64);
    s = kg_json_parse(&j, buf, 128, "deep", &err);
    kgt_check(s == KG_OK, "depth 64 accepted: %s", err.msg);
    kg_json_free(j);
    j = NULL;
    memset(buf, '[', 65);
    memset(buf + 65, ']', 65);
    s = kg_json_parse(&j, buf, 130, "deep", &err);
    kgt_check(s == KG_ERR_FORMAT && strstr(err.msg, "nesting deeper than 64"),
              "depth 65 refused: %s", err.msg);

    /* a bounded copy feeds strtod: absurdly long numbers are refused */
    memset(buf, '1', 200);
    s = kg_json_parse(&j, buf, 200, "long", &err);
    kgt_check(s == KG_ERR_FORMAT && strstr(err.msg, "number longer than 128"),
              "200-digit number refused: %s", err.msg);
    memset(buf, '9', 100);
    s = kg_json_parse(&j, buf, 100, "long", &err);
    kgt_check(s == KG_OK && kg_json_number(j, 0) > 9e99, "100-digit number parsed");
    kg_json_free(j);
    j = NULL;

    /* deep nesting of objects, far beyond the limit, fails without recursion blow-up */
    {
        size_t n = 100000;
        char *deep = malloc(n);
        memset(deep, '[', n);
        s = kg_json_parse(&j, deep, n, "deeper", &err);
        kgt_check(s == KG_ERR_FORMAT && strstr(err.msg, "nesting deeper"),
                  "100000 open brackets refused: %s", err.msg);
        free(deep);
    }
    /* the value budget: 1 array + 999999 numbers fit, one more does not */
    {
        size_t n = 1000000;
        char *doc = malloc(2 * n + 2);
        for (size_t zeros = n - 1; zeros <= n; zeros++) {
            doc[0] = '[';
            for (size_t i = 0; i < zeros; i++)
                doc[1 + 2 * i] = '0', doc[2 + 2 * i] = ',';
            doc[2 * zeros] = ']';
            j = NULL;
            s = kg_json_parse(&j, doc, 2 * zeros + 1, "wide", &err);
            if (zeros < n)
                kgt_check(s == KG_OK && kg_json_count(j) == zeros, "1000000 values accepted: %s",
                          s == KG_OK ? "" : err.msg);
            else
                kgt_check(s == KG_ERR_FORMAT && strstr(err.msg, "more than 1000000 values"),
                          "1000001 values refused: %s", err.msg);
            kg_json_free(j);
        }
        j = NULL;
        free(doc);
    }
    s = kg_json_parse(NULL, "1", 1, "x", &err);
    kgt_check(s == KG_ERR_INVALID_ARG, "NULL out refused");
}

/* A host application may switch LC_NUMERIC to a decimal-comma locale. */
static void test_locale(void)
{
    const char *names[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "C.UTF-8"};
    const char *got = NULL;
    kg_json *j = NULL;
    kg_error err = {0};
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !got; i++)
        got = setlocale(LC_NUMERIC, names[i]);
    kgt_check(kg_json_parse(&j, "2.5", 3, "loc", &err) == KG_OK && kg_json_number(j, 0) == 2.5,
              "2.5 parses under LC_NUMERIC=%s (decimal point '%s')", got ? got : "C",
              localeconv()->decimal_point);
    kg_json_free(j);
    setlocale(LC_NUMERIC, "C");
}

int main(void)
{
    test_valid();
    test_getters();
    test_invalid();
    test_limits();
    test_locale();
    return kgt_finish();
}
