#include "server/auth.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_KEY 4096

static int read_key_file(const char *path, char **key, eng_err *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return eng_err_set(err, ENG_EIO, "--api-key-file %s: %s", path, strerror(errno));
    char buf[MAX_KEY + 2];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0'; /* the first line; editors add a newline */
    if (!buf[0] || strlen(buf) > MAX_KEY)
        return eng_err_set(err, ENG_EINVAL, "--api-key-file %s: the first line must hold a key "
                           "of 1 to %d bytes", path, MAX_KEY);
    *key = strdup(buf);
    return *key ? 0 : eng_err_set(err, ENG_ENOMEM, "out of memory");
}

int srv_auth_init(srv_auth *a, const srv_options *o, eng_err *err)
{
    memset(a, 0, sizeof *a);
    a->protect_ops = o->protect_ops;
    if (o->api_key && o->api_key_file)
        return eng_err_set(err, ENG_EINVAL, "--api-key and --api-key-file: give one, not both");
    int rc = 0;
    if (o->api_key_file)
        rc = read_key_file(o->api_key_file, &a->key, err);
    else if (o->api_key && !(a->key = strdup(o->api_key)))
        rc = eng_err_set(err, ENG_ENOMEM, "out of memory");
    a->len = a->key ? strlen(a->key) : 0;
    return rc;
}

void srv_auth_free(srv_auth *a)
{
    free(a->key);
    memset(a, 0, sizeof *a);
}

/* Compares every byte of the key whatever the candidate holds: the time
 * depends only on the key's length. */
static bool same_key(const char *key, size_t len, const char *cand)
{
    size_t cand_len = strlen(cand);
    unsigned diff = cand_len != len;
    for (size_t i = 0; i < len; i++)
        diff |= (unsigned char)key[i] ^ (unsigned char)(i < cand_len ? cand[i] : 0);
    return diff == 0;
}

bool srv_auth_allows(const srv_auth *a, bool ops, const char *authorization)
{
    if (!a->key || (ops && !a->protect_ops))
        return true;
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return false;
    const char *cand = authorization + 7;
    while (*cand == ' ')
        cand++;
    return same_key(a->key, a->len, cand);
}
