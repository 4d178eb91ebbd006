/* The options shared by every server command: access rules, per-address
 * limits, the refusal log, and the privilege drop. */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/opts.h"
#include "cli/server_opts.h"
#include "tcpkit/log.h"
#include "tcpkit/parse.h"

void server_opts_init(server_opts *o, const char *cmd)
{
    memset(o, 0, sizeof(*o));
    o->cmd = cmd;
    tk_access_config_init(&o->access);
}

/* "20", "20/s", "0.5/s" or "600/m" into connections per second. */
static int parse_rate(const char *s, double *out)
{
    if ((*s < '0' || *s > '9') && *s != '.')
        return -EINVAL;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s)
        return -EINVAL;
    if (strcmp(end, "/m") == 0)
        v /= 60.0;
    else if (*end && strcmp(end, "/s") != 0)
        return -EINVAL;
    if (!(v > 0 && v <= 1e9))
        return -EINVAL;
    *out = v;
    return 0;
}

static int add_rules(server_opts *o, tk_access_list which, const char *flag, const char *arg)
{
    char err[256];
    if (!o->policy && tk_access_policy_new(&o->policy) < 0) {
        fprintf(stderr, "tcpkit %s: out of memory\n", o->cmd);
        return 1;
    }
    if (tk_access_policy_add(o->policy, which, arg, err, sizeof(err)) < 0)
        return opt_usage_error(o->cmd, "bad %s: %s", flag, err);
    o->access.policy = o->policy;
    return 0;
}

int server_option(server_opts *o, int ch, const char *arg)
{
    unsigned long v;
    double d;
    uint32_t ms;
    switch (ch) {
    case SO_ALLOW: o->access_used = 1; return add_rules(o, TK_ACCESS_ALLOW, "--allow", arg);
    case SO_DENY: o->access_used = 1; return add_rules(o, TK_ACCESS_DENY, "--deny", arg);
    case SO_MAX_CONNS_PER_IP:
        if (tk_parse_uint(arg, 0, 10000000, &v) < 0)
            return opt_usage_error(o->cmd, "bad --max-conns-per-ip '%s' (0 to 10000000)", arg);
        o->access.max_conns_per_ip = (unsigned)v;
        break;
    case SO_RATE_PER_IP:
        if (parse_rate(arg, &d) < 0)
            return opt_usage_error(o->cmd, "bad --rate-per-ip '%s' (N, N/s or N/m; N > 0)", arg);
        o->access.rate_per_ip = d;
        break;
    case SO_RATE_BURST:
        if (tk_parse_uint(arg, 1, 1000000000, &v) < 0)
            return opt_usage_error(o->cmd, "bad --rate-burst '%s' (1 to 1000000000)", arg);
        o->access.rate_burst = (double)v;
        o->burst_given = 1;
        break;
    case SO_PER_IP_TABLE:
        if (tk_parse_uint(arg, 1, TK_ACCESS_TABLE_MAX, &v) < 0)
            return opt_usage_error(o->cmd, "bad --per-ip-table '%s' (1 to %u)", arg,
                                   TK_ACCESS_TABLE_MAX);
        o->access.table_max = (unsigned)v;
        break;
    case SO_PER_IP_V6_PREFIX:
        if (tk_parse_uint(arg, 32, 128, &v) < 0)
            return opt_usage_error(o->cmd, "bad --per-ip-v6-prefix '%s' (32 to 128)", arg);
        o->access.ipv6_prefix = (unsigned)v;
        break;
    case SO_REFUSAL_LOG_INTERVAL:
        if (tk_parse_duration_ms(arg, &ms) < 0)
            return opt_usage_error(o->cmd, "bad --refusal-log-interval '%s' (seconds)", arg);
        o->access.log_interval_ms = ms;
        break;
    case SO_USER:
        if (!arg[0])
            return opt_usage_error(o->cmd, "--user needs a user name");
        o->user = arg;
        return 0;
    default: return -1;
    }
    o->access_used = 1;
    return 0;
}

/* Looks up --user and decides whether a switch is needed. */
static int resolve_user(server_opts *o)
{
    errno = 0;
    struct passwd *pw = getpwnam(o->user);
    if (!pw) {
        if (errno && errno != ENOENT && errno != ESRCH)
            fprintf(stderr, "tcpkit %s: --user '%s': cannot look it up: %s\n", o->cmd, o->user,
                    strerror(errno));
        else
            fprintf(stderr, "tcpkit %s: --user '%s': no such user\n", o->cmd, o->user);
        return 1;
    }
    if (strlen(pw->pw_name) >= sizeof(o->user_name)) {
        fprintf(stderr, "tcpkit %s: --user '%s': name too long\n", o->cmd, o->user);
        return 1;
    }
    snprintf(o->user_name, sizeof(o->user_name), "%s", pw->pw_name);
    o->uid = pw->pw_uid;
    o->gid = pw->pw_gid;
    if (geteuid() != 0) {
        if (pw->pw_uid == getuid() && pw->pw_uid == geteuid())
            return 0; /* already that user: nothing to drop */
        fprintf(stderr,
                "tcpkit %s: --user '%s' needs root (running as uid %u); start as root or "
                "leave --user out\n",
                o->cmd, o->user, (unsigned)geteuid());
        return 1;
    }
    if (pw->pw_uid == 0) {
        fprintf(stderr, "tcpkit %s: --user '%s' is root: name an unprivileged user\n", o->cmd,
                o->user);
        return 1;
    }
    o->drop = 1;
    return 0;
}

int server_opts_finish(server_opts *o)
{
    char err[256];
    if (o->burst_given && o->access.rate_per_ip <= 0)
        return opt_usage_error(o->cmd, "--rate-burst needs --rate-per-ip");
    if (tk_access_config_check(&o->access, err, sizeof(err)) < 0)
        return opt_usage_error(o->cmd, "%s", err);
    return o->user ? resolve_user(o) : 0;
}

const tk_access_config *server_opts_access(const server_opts *o)
{
    return o->access_used ? &o->access : NULL;
}

int server_opts_drop_privileges(const server_opts *o)
{
    if (!o->drop)
        return 0;
    if (initgroups(o->user_name, o->gid) < 0) {
        tk_error("--user %s: cannot set the supplementary groups: %s", o->user_name,
                 strerror(errno));
        return 1;
    }
    if (setresgid(o->gid, o->gid, o->gid) < 0) {
        tk_error("--user %s: cannot set group %u: %s", o->user_name, (unsigned)o->gid,
                 strerror(errno));
        return 1;
    }
    if (setresuid(o->uid, o->uid, o->uid) < 0) {
        tk_error("--user %s: cannot set user %u: %s", o->user_name, (unsigned)o->uid,
                 strerror(errno));
        return 1;
    }
    uid_t r, e, s;
    gid_t gr, ge, gs;
    if (getresuid(&r, &e, &s) < 0 || getresgid(&gr, &ge, &gs) < 0 || r != o->uid || e != o->uid ||
        s != o->uid || gr != o->gid || ge != o->gid || gs != o->gid || setuid(0) == 0 ||
        seteuid(0) == 0) {
        tk_error("--user %s: the switch did not take (root could be regained); stopping",
                 o->user_name);
        return 1;
    }
    tk_info("running as %s (uid %u, gid %u)", o->user_name, (unsigned)o->uid, (unsigned)o->gid);
    return 0;
}

void server_opts_free(server_opts *o)
{
    tk_access_policy_free(o->policy);
    o->policy = NULL;
    o->access.policy = NULL;
}
