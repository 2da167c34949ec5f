package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/internal/redistest"
	"github.com/chatterpro/chatterpro/internal/testkit"
	"github.com/chatterpro/chatterpro/internal/testnode"
)

// The password of a --layer URL never reaches the log: the startup line
// shows the URL redacted.
func TestLayerPasswordNotLogged(t *testing.T) {
	rs := redistest.StartOpts(t, redistest.Options{Args: []string{"--user", "ops", "on", ">s3cret", "~*", "&*", "+@all"}})
	n := testnode.Start(t, testnode.Options{Layer: "redis://ops:s3cret@" + rs.Addr() + "/0"})
	testkit.EventuallyNil(t, 10*time.Second, func() error {
		if log := n.Log(); !strings.Contains(log, "ChatterPro is running") {
			return fmt.Errorf("no startup line in the log:\n%s", log)
		}
		return nil
	}, "the startup line")
	log := n.Log()
	if strings.Contains(log, "s3cret") {
		t.Errorf("the log shows the password:\n%s", log)
	}
	if want := "layer=redis://xxxxx@" + rs.Addr() + "/0"; !strings.Contains(log, want) {
		t.Errorf("the log lacks %q:\n%s", want, log)
	}
}

// Nor does it reach an error about the --layer URL, whatever its form.
func TestLayerPasswordNotInErrors(t *testing.T) {
	tests := []struct {
		name  string
		layer string
		want  string // in the error
	}{
		{"path not a number", "redis://:s3cret@127.0.0.1:1/abc", `"redis://xxxxx@127.0.0.1:1/abc": the path must be a database number`},
		{"user and password", "redis://ops:s3cret@127.0.0.1:1/abc", `"redis://xxxxx@127.0.0.1:1/abc"`},
		{"no host", "redis://:s3cret@/0", `"redis://xxxxx@/0": give the server`},
		{"cluster without hosts", "redis-cluster://ops:s3cret@", `"redis-cluster://xxxxx@": give the cluster`},
		{"unknown kind", "rediss://:s3cret@h1:1,h2:2/0", `"rediss://xxxxx@h1:1,h2:2/0": unknown kind "rediss"`},
		{"not a URL: # in the password", "redis://:s3cret#1@127.0.0.1:1/0", "--layer is not a valid URL"},
		{"not a URL: space in the password", "redis://:s3cret 1@127.0.0.1:1/0", "--layer is not a valid URL"},
		// These parse, but with the password as host or path.
		{"slash in the password", "redis://ops:123/s3cret@127.0.0.1:1/0", "--layer is not a valid URL"},
		{"password after a colon and slash", "redis://:/s3cret@127.0.0.1:1/0", "--layer is not a valid URL"},
		{"question mark in the password", "redis://ops:?s3cret@127.0.0.1/0", "--layer is not a valid URL"},
		{"hash after digits in the password", "redis://:12#s3cret@127.0.0.1/0", "--layer is not a valid URL"},
		{"sentinel: no master name", "redis-sentinel://:s3cret@127.0.0.1:1?sentinel_password=s3cret", `"redis-sentinel://xxxxx@127.0.0.1:1?xxxxx": the path must be the primary's name`},
		{"sentinel: database not a number", "redis-sentinel://127.0.0.1:1/m/x?sentinel_password=s3cret", `the database (after the primary's name) must be a number`},
		{"sentinel: password as an unknown parameter", "redis-sentinel://127.0.0.1:1/m?s3cret", "unknown query parameter"},
		{"sentinel: too many path parts", "redis-sentinel://:s3cret@127.0.0.1:1/m/0/1", "the path must be the primary's name"},
		{"sentinel: no hosts", "redis-sentinel://:s3cret@/m", "give the Sentinels"},
		{"sentinel: @ in the sentinel password", "redis-sentinel://127.0.0.1:1/m?sentinel_password=s3@cret", "--layer is not a valid URL"},
		{"replicas on a cluster", "redis-cluster://:s3cret@127.0.0.1:1", "--redis-replicas works with redis:// and redis-sentinel://"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(slog.NewTextHandler(&buf, nil))
			args := []string{"--addr", "127.0.0.1:0", "--secret", testnode.DefaultSecret, "--layer", tt.layer}
			if strings.HasPrefix(tt.name, "replicas") {
				args = append(args, "--redis-replicas", "1")
			}
			err := run(context.Background(), args, log)
			if err == nil {
				t.Fatal("run succeeded")
			}
			log.Error("chatterpro stopped", "err", err) // as main does
			if strings.Contains(buf.String(), "s3cret") {
				t.Errorf("the password is in the log:\n%s", buf.String())
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q; want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct {
		name, raw, want string
	}{
		{"memory", "memory://", "memory://"},
		{"no user info", "redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"},
		{"user only", "redis://ops@127.0.0.1:6379/0", "redis://xxxxx@127.0.0.1:6379/0"},
		{"password only", "redis://:pw@127.0.0.1:6379/0", "redis://xxxxx@127.0.0.1:6379/0"},
		{"user and password", "redis://ops:pw@127.0.0.1:6379/0", "redis://xxxxx@127.0.0.1:6379/0"},
		{"escaped password", "redis://:p%40w@127.0.0.1:6379/0", "redis://xxxxx@127.0.0.1:6379/0"},
		{"cluster", "redis-cluster://ops:pw@10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000", "redis-cluster://xxxxx@10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000"},
		{"# in the password", "redis://:p#w@127.0.0.1:6379/0", "redis://xxxxx@127.0.0.1:6379/0"},
		{"slash in the password", "redis://ops:123/pw@127.0.0.1:6379/0", "redis://xxxxx@127.0.0.1:6379/0"},
		{"@ in the password", "redis://ops:p@w@127.0.0.1:6379/0", "redis://xxxxx@127.0.0.1:6379/0"},
		{"sentinel", "redis-sentinel://ops:pw@10.0.0.1:26379,10.0.0.2:26379/mymaster/0", "redis-sentinel://xxxxx@10.0.0.1:26379,10.0.0.2:26379/mymaster/0"},
		{"sentinel password", "redis-sentinel://10.0.0.1:26379/mymaster?sentinel_password=pw", "redis-sentinel://10.0.0.1:26379/mymaster?xxxxx"},
		{"both passwords", "redis-sentinel://:pw@10.0.0.1:26379/mymaster?sentinel_password=spw", "redis-sentinel://xxxxx@10.0.0.1:26379/mymaster?xxxxx"},
		{"& and # in the sentinel password", "redis-sentinel://h:1/m?sentinel_password=a&b#c", "redis-sentinel://h:1/m?xxxxx"},
		{"no scheme", "ops:pw@127.0.0.1:6379", "(not shown: it may hold a password)"},
		{"not a URL, without", "redis://127.0.0.1:port/0", "redis://127.0.0.1:port/0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := redactURL(tt.raw); got != tt.want {
				t.Errorf("redactURL(%q) = %q, want %q", tt.raw, got, tt.want)
			}
		})
	}
}
