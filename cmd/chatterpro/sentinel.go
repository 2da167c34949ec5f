package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// failoverOptions reads a redis-sentinel:// URL into o:
//
//	redis-sentinel://[user:password@]host:port[,host:port...]/<master-name>[/<db>][?sentinel_password=...]
//
// The hosts are Sentinels; the user and password are the primary's; the
// Sentinels' own password, if any, is the sentinel_password parameter.
// Errors show the URL as shown (redacted), never a password.
func failoverOptions(u *url.URL, shown string, o *redis.UniversalOptions) error {
	if u.Host == "" {
		return fmt.Errorf("--layer %q: give the Sentinels and the primary's name as redis-sentinel://host:port[,host:port...]/master-name[/db]", shown)
	}
	for _, a := range strings.Split(u.Host, ",") {
		if a == "" {
			return fmt.Errorf("--layer %q: an empty Sentinel address", shown)
		}
		if !strings.Contains(a, ":") {
			a += ":26379" // Sentinel's default port
		}
		o.Addrs = append(o.Addrs, a)
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if parts[0] == "" || len(parts) > 2 {
		return fmt.Errorf("--layer %q: the path must be the primary's name as the Sentinels know it, then optionally a database number: /mymaster or /mymaster/0", shown)
	}
	o.MasterName = parts[0]
	if len(parts) == 2 {
		db, err := strconv.Atoi(parts[1])
		if err != nil || db < 0 {
			return fmt.Errorf("--layer %q: the database (after the primary's name) must be a number", shown)
		}
		o.DB = db
	}
	if u.User != nil {
		o.Username = u.User.Username()
		o.Password, _ = u.User.Password()
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return fmt.Errorf("--layer %q: the query does not parse (percent-encode special characters of the Sentinel password)", shown)
	}
	for k := range q {
		if k != "sentinel_password" {
			// Not named: a misplaced password would be shown.
			return fmt.Errorf("--layer %q: unknown query parameter (the only one is sentinel_password)", shown)
		}
	}
	o.SentinelPassword = q.Get("sentinel_password")
	return nil
}

// checkSentinels asks each Sentinel of o for the primary, so that a wrong
// setting stops the node with a clear error instead of leaving it not
// ready for ever: a Sentinel that refuses the password, or Sentinels that
// answer but none of which knows the primary's name. Sentinels that cannot
// be reached are an outage, not a setting: that is newRedis's to handle.
func checkSentinels(ctx context.Context, o *redis.FailoverOptions) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	answered, unknown := 0, 0
	for _, addr := range o.SentinelAddrs {
		sc := redis.NewSentinelClient(&redis.Options{
			Addr: addr, Username: o.SentinelUsername, Password: o.SentinelPassword,
			DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, MaxRetries: -1,
		})
		_, err := sc.GetMasterAddrByName(ctx, o.MasterName).Result()
		_ = sc.Close()
		switch {
		case err == nil:
			return nil // one Sentinel knows it: the rest is up to them
		case errors.Is(err, redis.Nil):
			answered++
			unknown++
		case settingError(err) || redis.HasErrorPrefix(err, "ERR unknown command") || redis.HasErrorPrefix(err, "ERR unknown subcommand"):
			return fmt.Errorf("the Sentinel at %s refused the connection: %v (check the sentinel_password parameter, and that %s is a Sentinel)", addr, err, addr)
		}
	}
	if answered > 0 && unknown == answered {
		return fmt.Errorf("no Sentinel knows a primary named %q (check the name after the Sentinels' addresses)", o.MasterName)
	}
	return nil
}

// hideQuery returns a --layer URL's text without the values of its query
// (everything after the first "?", where the Sentinel password goes, is
// shown as "xxxxx"), for logs and errors.
func hideQuery(raw string) string {
	if i := strings.IndexByte(raw, '?'); i >= 0 && i+1 < len(raw) {
		return raw[:i+1] + "xxxxx"
	}
	return raw
}
